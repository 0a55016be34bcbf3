"""The image encoder's frozen stem run once per image: a cache of its activations, shared by every model
whose first image groups are the same.

An image stage with ``freeze_image_groups: N`` keeps the encoder's first N groups (the stem and the first
N-1 blocks, :meth:`EmbeddingModel.image_groups`) fixed, so every model a run derives from one start
(GPR-FT, MCIP, their WiSE-FT merges, the Re-A rows that reuse their image towers) computes the same
activations there for an image under the eval transform. The stage records that stem
(:func:`register_image_stem`: its fingerprint and N, in ``CACHE_DIR/image-stems.json``); afterwards
any encode of a file list by a model with that stem (:func:`mcip.embed.cached_image_embeddings`, the
image stages' validation, the WiSE-FT curve) decodes and runs the stem once per list
(:func:`cached_image_stem`, float32 on disk, memory-mapped) and each model runs only the rest of its
encoder (:mod:`mcip.models.image_split`). The embeddings equal the whole encoder's to float rounding:
the same modules run on the same float32 values.

Only where the encoder can be split (timm EfficientNet / MobileNetV3 towers of composed models) and the
stems of one file list fit :func:`stem_cache_limit` bytes (``MCIP_STEM_CACHE_BYTES``, default 4 GiB;
the lab's 11,217 images at 96 px take 620 MB); otherwise the whole encoder runs, as before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mcip._io import atomic_write_json
from mcip.data.cache import FeatureCache, cache_key
from mcip.data.dataset import decode_image
from mcip.data.images import eval_decoding
from mcip.errors import ConfigError
from mcip.models import image_split
from mcip.models.base import EmbeddingModel
from mcip.models.fingerprint import image_stem_fingerprint

REGISTRY = "image-stems.json"
MAX_REGISTERED = 64  # stems remembered per cache folder (the most recent)
DEFAULT_LIMIT_BYTES = 4 << 30


def stem_cache_limit() -> int:
    """The largest stem cache of one file list, in bytes: ``$MCIP_STEM_CACHE_BYTES`` (0 turns the stem
    cache off), else 4 GiB. It bounds an evaluation's decoded pixels too (:mod:`mcip.image_pixels`)."""
    value = os.environ.get("MCIP_STEM_CACHE_BYTES")
    if value is None or not value.strip():
        return DEFAULT_LIMIT_BYTES
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"MCIP_STEM_CACHE_BYTES must be a whole number of bytes (0 turns the image stem cache off), "
            f"got {value!r}; unset it for the default of {DEFAULT_LIMIT_BYTES} (4 GiB)."
        ) from None


def _read_registry(cache_dir: Path) -> list[dict]:
    try:
        entries = json.loads((cache_dir / REGISTRY).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(entries, list):
        return []
    return [  # a damaged entry is ignored (the cache is rebuilt, never trusted)
        e
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("fingerprint"), str) and type(e.get("groups")) is int
    ]


def register_image_stem(model: EmbeddingModel, groups: int, cache_dir: str | os.PathLike) -> bool:
    """Record that ``model``'s first ``groups`` image groups stay fixed (a stage that freezes them), so
    later encodes by models with the same stem reuse its activations. False (nothing recorded) where the
    encoder cannot be split or ``groups`` is 0."""
    if groups < 1 or not image_split.supports(model, groups):
        return False
    cache_dir = Path(cache_dir)
    fingerprint = image_stem_fingerprint(model, groups)
    known = _read_registry(cache_dir)
    if any(e["fingerprint"] == fingerprint and e["groups"] == groups for e in known):
        return True  # already recorded (every DDP rank calls this; only one writes)
    entry = {"fingerprint": fingerprint, "groups": groups, "shape": list(_stem_shape(model, groups))}
    entries = [*known, entry]
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache_dir / REGISTRY, entries[-MAX_REGISTERED:], indent=1)
    return True


def _registered(model: EmbeddingModel, cache_dir: str | os.PathLike) -> dict | None:
    """The registry entry of the deepest registered stem that ``model``'s first image groups are."""
    entries = _read_registry(Path(cache_dir))
    for groups in sorted({int(e["groups"]) for e in entries}, reverse=True):
        if not image_split.supports(model, groups):
            continue
        mine = image_stem_fingerprint(model, groups)
        found = [e for e in entries if e["fingerprint"] == mine and int(e["groups"]) == groups]
        if found:
            return found[-1]
    return None


def registered_stem_groups(model: EmbeddingModel, cache_dir: str | os.PathLike) -> int:
    """The largest N such that ``model``'s first N image groups are a stem registered in ``cache_dir``
    (0: none)."""
    entry = _registered(model, cache_dir)
    return 0 if entry is None else int(entry["groups"])


def _stem_shape(model: EmbeddingModel, groups: int) -> tuple[int, ...]:
    size = model.image_size
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            probe = torch.zeros(1, 3, size, size, device=model.device, dtype=model.dtype)
            return tuple(image_split.stem(model, probe, groups).shape[1:])
    finally:
        model.train(was)


@dataclass
class ImageStems:
    """The stem activations of a file list: ``rows`` (N, prod(shape)) float32 (NaN rows: unreadable
    images), ``shape`` one image's (C, H, W), ``groups`` the groups they cover and ``fingerprint`` the
    stem that computed them."""

    groups: int
    rows: np.ndarray
    shape: tuple[int, ...]
    fingerprint: str

    def matches(self, model: EmbeddingModel) -> bool:
        """Whether ``model``'s first ``groups`` image groups are the stem that computed ``rows``."""
        return image_split.supports(model, self.groups) and image_stem_fingerprint(model, self.groups) == (
            self.fingerprint
        )

    @torch.no_grad()
    def embeddings(
        self, model: EmbeddingModel, start: int = 0, stop: int | None = None, batch_size: int = 64
    ):
        """(M, D) float32 L2-normalised embeddings of rows ``start:stop`` by ``model`` (eval mode; NaN
        rows stay NaN): only the encoder after the stem and the projector run."""
        stop = len(self.rows) if stop is None else stop
        out = np.full((stop - start, model.embed_dim), np.nan, dtype=np.float32)
        was = model.training
        model.eval()
        try:
            for lo in range(start, stop, batch_size):
                block = np.asarray(self.rows[lo : min(stop, lo + batch_size)], dtype=np.float32)
                readable = ~np.isnan(block[:, 0])
                if not readable.any():
                    continue
                x = torch.from_numpy(block[readable]).reshape(-1, *self.shape)
                x = x.to(model.device, model.dtype, memory_format=model.pixel_format)
                emb = model.project_image(image_split.features_from_stem(model, x, self.groups))
                where = np.flatnonzero(readable) + (lo - start)
                out[where] = F.normalize(emb.float(), dim=-1).cpu().numpy()
        finally:
            model.train(was)
        return out


def cached_image_stem(
    model: EmbeddingModel,
    paths: Sequence[os.PathLike | str],
    cache_dir: str | os.PathLike,
    groups: int,
    batch_size: int = 64,
    shape: Sequence[int] | None = None,
) -> ImageStems | None:
    """The stem activations of ``paths`` (eval transform) by ``model``'s first ``groups`` image groups,
    computed once per (stem fingerprint, eval decoding, file list) and memory-mapped afterwards (an
    interrupted fill resumes); None where the encoder cannot be split or the rows would exceed
    :func:`stem_cache_limit`. ``shape``: one image's stem activations, when known (else one blank
    image runs through the stem to find it)."""
    if groups < 1 or not image_split.supports(model, groups):
        return None
    paths = [Path(p) for p in paths]
    shape = tuple(shape) if shape else _stem_shape(model, groups)
    width = int(np.prod(shape))
    if len(paths) * width * 4 > stem_cache_limit():
        return None
    fingerprint = image_stem_fingerprint(model, groups)

    @torch.no_grad()
    def compute(indices: list[int]) -> np.ndarray:
        out = np.full((len(indices), width), np.nan, dtype=np.float32)
        pixels, rows = [], []
        for row, i in enumerate(indices):
            decoded = decode_image(paths[i], model.eval_transform, str(paths[i]))
            if not isinstance(decoded, str):  # a string is the reason it could not be read
                pixels.append(decoded)
                rows.append(row)
        if pixels:
            was = model.training
            model.eval()
            try:
                x = torch.stack(pixels).to(model.device, model.dtype, memory_format=model.pixel_format)
                out[rows] = image_split.stem(model, x, groups).float().reshape(len(rows), -1).cpu().numpy()
            finally:
                model.train(was)
        return out

    files = cache_key(*map(str, paths)) if paths else "empty"
    key = cache_key("image-stem", fingerprint, eval_decoding(), files)
    rows = FeatureCache(cache_dir).get_or_compute(
        key, len(paths), width, compute, batch_size=batch_size, dtype="float32", desc="caching image stems"
    )
    return ImageStems(groups, rows, shape, fingerprint)


def image_stems(
    model: EmbeddingModel, paths: Sequence[os.PathLike | str], cache_dir: str | os.PathLike
) -> ImageStems | None:
    """The stems of ``paths`` when ``model``'s first image groups are a registered stem
    (:func:`register_image_stem`) and they fit the limit; None otherwise (run the whole encoder)."""
    if stem_cache_limit() <= 0:
        return None
    entry = _registered(model, cache_dir)
    if entry is None:
        return None
    return cached_image_stem(model, paths, cache_dir, int(entry["groups"]), shape=entry.get("shape"))
