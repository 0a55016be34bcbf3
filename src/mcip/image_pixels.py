"""An evaluation's images decoded once: their eval-transform pixels cached on disk, shared by every model
that sees images the same way.

``mcip fit`` and ``mcip lab run`` evaluate several rows (the starting model, GPR-FT, MCIP, their WiSE-FT
merges) on the same val and test images, and ``mcip eval`` may be given several models. Decoding a file
(PNG or JPEG decompression, compositing, the bicubic resize) costs about a third of encoding it with the
lab's EfficientNet-Lite0. Where a model's image tower has to run on a file list (no cached embeddings,
features or stem), :func:`mcip.embed.cached_image_embeddings` asked by an evaluation reads the list's
pixels from here: the first such model decodes each file and stores its cropped 8-bit RGB pixels
(:func:`mcip.models.transforms.eval_geometry`), the next ones only scale and normalise them
(:func:`mcip.models.transforms.eval_to_tensor`). The stored pixels are exactly what the eval transform
produces before it turns them into floats, so the embeddings are bitwise those of decoding again.

The cache is keyed by what decides the pixels: the side, resize ratio and interpolation of the image
config (not its mean and std, applied after), the eval decoding (:func:`mcip.data.images.eval_decoding`)
and the file list. One list's pixels are kept only when they fit :func:`mcip.image_stems.stem_cache_limit`
bytes (``MCIP_STEM_CACHE_BYTES``, default 4 GiB: 28,000 images at 224 px); a larger list is decoded
by every model, as before. An unreadable file is stored as such and stays a NaN row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mcip.data.cache import FeatureCache, cache_key
from mcip.data.dataset import decode_image
from mcip.data.images import eval_decoding
from mcip.image_stems import stem_cache_limit
from mcip.models.base import EmbeddingModel
from mcip.models.transforms import ImageConfig, eval_geometry

READABLE = 1
"""The first byte of a stored row: 1 for a decoded image, 0 for a file that could not be read."""


def _pixels_key(cfg: ImageConfig, paths: Sequence[Path]) -> str:
    files = cache_key(*map(str, paths)) if paths else "empty"
    geometry = f"{cfg.size}|{cfg.resize_ratio!r}|{cfg.interpolation}"
    return cache_key("eval-pixels", geometry, eval_decoding(), files)


@dataclass
class EvalPixels:
    """The eval-transform pixels of a file list: ``rows`` (N, 1 + S*S*3) uint8, the first byte
    :data:`READABLE` or 0, then the (S, S, 3) RGB crop."""

    rows: np.ndarray
    size: int

    def readable(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.rows[start:stop, 0]) == READABLE

    def tensor(self, model: EmbeddingModel, start: int, stop: int) -> torch.Tensor:
        """(M, 3, S, S) normalised float pixels of the readable rows in ``start:stop``, as
        ``model.eval_transform`` gives them (the same operations, element by element)."""
        block = np.asarray(self.rows[start:stop])
        crops = block[block[:, 0] == READABLE, 1:].reshape(-1, self.size, self.size, 3)
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous().to(torch.get_default_dtype()).div(255)
        cfg = model.image_config
        mean = torch.as_tensor(cfg.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.as_tensor(cfg.std, dtype=x.dtype).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    @torch.no_grad()
    def embeddings(self, model: EmbeddingModel, start: int, stop: int) -> np.ndarray:
        """(M, D) float32 L2-normalised embeddings of rows ``start:stop`` by ``model`` (eval mode; NaN rows
        for unreadable files): only the network runs, as :func:`mcip.embed.encode_images` runs it."""
        out = np.full((stop - start, model.embed_dim), np.nan, dtype=np.float32)
        readable = self.readable(start, stop)
        if readable.any():
            was = model.training
            model.eval()
            try:
                out[readable] = model.encode_image(self.tensor(model, start, stop)).float().cpu().numpy()
            finally:
                model.train(was)
        return out


def cached_eval_pixels(
    model: EmbeddingModel,
    paths: Sequence[os.PathLike | str],
    cache_dir: str | os.PathLike,
    batch_size: int = 64,
) -> EvalPixels | None:
    """The eval-transform pixels of ``paths`` as ``model`` sees them, decoded once per (geometry, eval
    decoding, file list) and memory-mapped afterwards (an interrupted fill resumes); None where they
    would exceed :func:`mcip.image_stems.stem_cache_limit`."""
    cfg = model.image_config
    paths = [Path(p) for p in paths]
    width = 1 + cfg.size * cfg.size * 3
    if len(paths) * width > stem_cache_limit():
        return None
    geometry = eval_geometry(cfg)

    def compute(indices: list[int]) -> np.ndarray:
        out = np.zeros((len(indices), width), np.uint8)
        for row, i in enumerate(indices):
            decoded = decode_image(paths[i], geometry, str(paths[i]))
            if not isinstance(decoded, str):  # a string is the reason it could not be read
                out[row, 0] = READABLE
                out[row, 1:] = np.asarray(decoded, dtype=np.uint8).reshape(-1)
        return out

    rows = FeatureCache(cache_dir).get_or_compute(
        _pixels_key(cfg, paths), len(paths), width, compute, batch_size, "uint8", "decoding images"
    )
    return EvalPixels(rows, cfg.size)
