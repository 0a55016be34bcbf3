"""Encode a folder of images into a matrix of joint embeddings, skipping unreadable files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mcip.data.dataset import decode_image
from mcip.data.images import eval_decoding
from mcip.models.base import EmbeddingModel


@dataclass
class EncodedImages:
    """(N, D) float32 embeddings of the readable images, their paths, their positions in the input
    list (``rows``), and what was skipped."""

    embeddings: np.ndarray
    paths: list[Path]
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    rows: list[int] = field(default_factory=list)

    def labels_from_folders(self, root: Path) -> list[str]:
        """The parent folder of each image relative to ``root`` ('' for images directly in it)."""
        return [str(p.relative_to(root).parent) if p.parent != root else "" for p in self.paths]


class _Decoded(torch.utils.data.Dataset):
    """Row i -> (i, pixels or the error text): what a decoding worker hands back."""

    def __init__(self, paths: Sequence[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return i, decode_image(self.paths[i], self.transform, str(self.paths[i]))


def _decoded_batches(paths: Sequence[Path], transform, batch_size: int, num_workers: int):
    """Lists of (row, pixels or error) in input order; decoded in ``num_workers`` processes (0: here)."""
    if num_workers <= 0:
        for lo in range(0, len(paths), batch_size):
            yield [
                (row, decode_image(p, transform, str(p)))
                for row, p in enumerate(paths[lo : lo + batch_size], lo)
            ]
        return
    loader = torch.utils.data.DataLoader(
        _Decoded(paths, transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
        prefetch_factor=2,
    )
    yield from loader


@torch.no_grad()
def encode_images(
    model: EmbeddingModel,
    paths: list[Path],
    batch_size: int = 32,
    progress: bool = True,
    num_workers: int = 0,
    compile: bool = False,
) -> EncodedImages:
    """Encode ``paths`` in batches. Files that fail to decode are skipped and reported, never fatal.

    ``num_workers`` > 0 decodes in that many worker processes while this one runs the model (the
    order and the result are the same as decoding here). ``compile``: the image tower runs through
    ``torch.compile`` (:mod:`mcip.models.compiled`; pays off on long jobs)."""
    from mcip.models.compiled import image_encoder

    start = time.perf_counter()
    transform = model.eval_transform
    encode = image_encoder(model, compile, batch_size)
    chunks, kept, rows, skipped = [], [], [], {}
    bar = tqdm(total=len(paths), desc="encoding images", unit="img", disable=not progress)
    for batch in _decoded_batches(paths, transform, batch_size, num_workers):
        pixels = []
        for row, decoded in batch:
            if isinstance(decoded, str):
                skipped[str(paths[row])] = decoded
                continue
            pixels.append(decoded)
            kept.append(paths[row])
            rows.append(row)
        if pixels:
            chunks.append(encode(torch.stack(pixels)).float().cpu().numpy())
        bar.update(len(batch))
    bar.close()
    dim = model.embed_dim
    emb = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return EncodedImages(emb, kept, skipped, time.perf_counter() - start, rows)


def leave_one_out_nn_accuracy(emb: np.ndarray, labels: list[str]) -> float | None:
    """Fraction of images whose nearest other image (cosine) has the same label; None if < 2 labels."""
    if len(set(labels)) < 2 or len(labels) < 2:
        return None
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(1)
    return float(np.mean([labels[j] == labels[i] for i, j in enumerate(nearest)]))


def nearest_neighbours(emb: np.ndarray, k: int, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar images of each of the first ``rows`` (default: all) of ``emb``
    ((N, D), L2-normalised): (R, k) indices into ``emb``, most similar first, and their (R, k)
    similarities. An image is not its own neighbour: it ranks last, with similarity -inf (so it appears
    only when k >= N)."""
    rows = len(emb) if rows is None else max(0, min(rows, len(emb)))
    sim = emb[:rows] @ emb.T
    sim[np.arange(rows), np.arange(rows)] = -np.inf
    order = np.argsort(-sim, axis=1)[:, :k]
    return order, np.take_along_axis(sim, order, axis=1)


@torch.no_grad()
def rank_by_text(
    model: EmbeddingModel, emb: np.ndarray, query: str, k: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` images of ``emb`` ((N, D) image embeddings of ``model``) most similar to the text
    ``query``: (k,) indices, best first, and their (k,) cosine similarities."""
    text = model.encode_text([query]).float().cpu().numpy()[0]
    scores = emb @ text
    top = np.argsort(-scores)[:k]
    return top, scores[top]


def write_encoded(result: EncodedImages, out_dir: str | os.PathLike, root: Path, model_spec: str) -> dict:
    """Write embeddings.npy, images.txt and summary.json; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "embeddings.npy", result.embeddings)
    rel = [str(p.relative_to(root)) for p in result.paths]
    (out / "images.txt").write_text("".join(r + "\n" for r in rel))
    labels = result.labels_from_folders(root)
    summary = {
        "model": model_spec,
        "images": len(result.paths),
        "embedding_dim": int(result.embeddings.shape[1]),
        "skipped": len(result.skipped),
        "skipped_files": result.skipped,
        "seconds": round(result.seconds, 3),
        "folder_1nn_accuracy": leave_one_out_nn_accuracy(result.embeddings, labels),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def default_cache_dir() -> Path:
    """Where feature caches live: ``$MCIP_CACHE_DIR``, else ``$XDG_CACHE_HOME/mcip/features``
    (``~/.cache/mcip/features``)."""
    env = os.environ.get("MCIP_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mcip" / "features"


def cached_image_embeddings(
    model: EmbeddingModel,
    paths: Sequence[os.PathLike | str],
    cache_dir: str | os.PathLike,
    batch_size: int = 64,
    desc: str = "encoding images",
    share_pixels: bool = False,
) -> np.ndarray:
    """(N, D) float16 L2-normalised image embeddings (eval transform), computed once per (image-tower
    fingerprint, file list) and memory-mapped from ``cache_dir`` afterwards. Unreadable images give NaN
    rows; callers decide whether to drop or count them. An interrupted computation resumes. Where the
    encoder's pooled features are cached (:func:`cached_image_features`) only the projector runs; where
    its first groups are a registered frozen stem (:mod:`mcip.image_stems`), only the rest of it.
    ``share_pixels`` (an evaluation of several models on these files): the decoded pixels are cached too
    and read by the next model that has to run its whole encoder (:mod:`mcip.image_pixels`)."""
    from mcip.data.cache import FeatureCache
    from mcip.image_pixels import cached_eval_pixels
    from mcip.image_stems import image_stems

    paths = [Path(p) for p in paths]
    cache = FeatureCache(cache_dir)
    stored: list = []  # looked up once, when a row is missing (a complete cache needs no second hash)

    def compute(indices: list[int]) -> np.ndarray:
        if not stored:
            features = _stored_image_features(model, paths, cache)
            stems = None if features is not None else image_stems(model, paths, cache_dir)
            wanted = share_pixels and features is None and stems is None
            stored.extend((features, stems, cached_eval_pixels(model, paths, cache_dir) if wanted else None))
        if stored[0] is not None:  # the encoder's pooled features are on disk: only the projector runs
            return project_image_features(model, stored[0][indices[0] : indices[-1] + 1])
        if stored[1] is not None:  # a shared frozen stem's activations are on disk: the rest runs
            return stored[1].embeddings(model, indices[0], indices[-1] + 1)
        if stored[2] is not None:  # the files' decoded pixels are on disk: the whole encoder runs
            return stored[2].embeddings(model, indices[0], indices[-1] + 1)
        out = np.full((len(indices), model.embed_dim), np.nan, dtype=np.float32)
        encoded = encode_images(model, [paths[i] for i in indices], len(indices), progress=False)
        out[encoded.rows] = encoded.embeddings
        return out

    key = image_embeddings_key(model, paths)
    return cache.get_or_compute(key, len(paths), model.embed_dim, compute, batch_size=batch_size, desc=desc)


def image_embeddings_key(model: EmbeddingModel, paths: Sequence[os.PathLike | str]) -> str:
    """The cache key of :func:`cached_image_embeddings` (and of the Ray engine's twin, which must match):
    the image tower's fingerprint, the eval decoding and the file list."""
    from mcip.data.cache import cache_key
    from mcip.models.fingerprint import IMAGE_PARTS, model_fingerprint

    files = cache_key(*map(str, paths))
    return cache_key("image", model_fingerprint(model, IMAGE_PARTS), eval_decoding(), files)


def text_embeddings_key(model: EmbeddingModel, texts: Sequence[str]) -> str:
    """The cache key of :func:`cached_text_embeddings` (and of the Ray engine's twin): the text tower's
    fingerprint and the texts."""
    from mcip.data.cache import cache_key
    from mcip.models.fingerprint import TEXT_PARTS, model_fingerprint

    return cache_key("text", model_fingerprint(model, TEXT_PARTS), cache_key(*texts) if texts else "empty")


def _image_features_key(model: EmbeddingModel, paths: Sequence[Path]) -> str:
    """The :func:`cached_image_features` key of ``paths`` for ``model``'s image encoder."""
    from mcip.data.cache import cache_key
    from mcip.models.fingerprint import model_fingerprint

    fingerprint = model_fingerprint(model, ("image_encoder",))
    return cache_key("image-features", fingerprint, eval_decoding(), cache_key(*map(str, paths)))


def _stored_image_features(model: EmbeddingModel, paths: Sequence[Path], cache) -> np.ndarray | None:
    """The complete :func:`cached_image_features` of ``paths`` by ``model``'s image encoder, when a
    stage that trains only the projectors (the lab's alignment) has stored them, else None."""
    return cache.get(_image_features_key(model, paths), len(paths))


@torch.no_grad()
def project_image_features(model: EmbeddingModel, features: np.ndarray) -> np.ndarray:
    """(B, D) L2-normalised embeddings of (B, F_img) pooled encoder features (NaN rows stay NaN)."""
    feats = torch.from_numpy(np.array(features, dtype=np.float32))
    readable = ~torch.isnan(feats).any(dim=1)
    out = np.full((len(feats), model.embed_dim), np.nan, dtype=np.float32)
    if readable.any():
        was = model.training
        model.eval()
        try:
            emb = model.project_image(feats[readable].to(model.device, model.dtype))
        finally:
            model.train(was)
        out[readable.numpy()] = F.normalize(emb.float(), dim=-1).cpu().numpy()
    return out


@torch.no_grad()
def cached_text_embeddings(
    model: EmbeddingModel,
    texts: Sequence[str],
    cache_dir: str | os.PathLike,
    batch_size: int = 256,
    desc: str = "encoding texts",
    dtype: str = "float16",
) -> np.ndarray:
    """(T, D_text) L2-normalised text embeddings (eval mode), cached per (text-tower fingerprint, texts);
    float16 unless ``dtype`` says otherwise (each dtype is a cache of its own)."""
    from mcip.data.cache import FeatureCache, cache_key

    texts = list(texts)
    was = model.training
    model.eval()
    try:
        width = model.encode_text(["a"]).shape[-1]

        def compute(indices: list[int]) -> np.ndarray:
            return model.encode_text([texts[i] for i in indices]).float().cpu().numpy()

        key = text_embeddings_key(model, texts)
        key = key if dtype == "float16" else cache_key(key, dtype)
        return FeatureCache(cache_dir).get_or_compute(
            key, len(texts), width, compute, batch_size=batch_size, dtype=dtype, desc=desc
        )
    finally:
        model.train(was)


@torch.no_grad()
def cached_image_features(
    model: EmbeddingModel,
    paths: Sequence[os.PathLike | str],
    cache_dir: str | os.PathLike,
    batch_size: int = 64,
    desc: str = "caching image features",
) -> np.ndarray:
    """(N, F_img) float32 pooled image-encoder features BEFORE the projector (eval transform), cached per
    (image-encoder fingerprint, file list): what a stage that trains only the projectors needs. Unreadable
    images give NaN rows."""
    from mcip.data.cache import FeatureCache

    paths = [Path(p) for p in paths]
    size = model.image_size
    width = model.image_features(torch.zeros(1, 3, size, size, device=model.device)).shape[-1]

    def compute(indices: list[int]) -> np.ndarray:
        out = np.full((len(indices), width), np.nan, dtype=np.float32)
        pixels, rows = [], []
        for row, i in enumerate(indices):
            decoded = decode_image(paths[i], model.eval_transform, str(paths[i]))
            if not isinstance(decoded, str):
                pixels.append(decoded)
                rows.append(row)
        if pixels:
            was = model.training
            model.eval()  # the cache also feeds embeddings (cached_image_embeddings): eval features only
            try:
                feats = model.image_features(
                    torch.stack(pixels).to(model.device, memory_format=model.pixel_format)
                )
            finally:
                model.train(was)
            out[rows] = feats.float().cpu().numpy()
        return out

    key = _image_features_key(model, paths)
    return FeatureCache(cache_dir).get_or_compute(
        key, len(paths), width, compute, batch_size=batch_size, dtype="float32", desc=desc
    )


@torch.no_grad()
def cached_text_features(
    model: EmbeddingModel,
    texts: Sequence[str],
    cache_dir: str | os.PathLike,
    batch_size: int = 256,
    desc: str = "caching text features",
) -> np.ndarray:
    """(T, F_txt) float32 pooled text-encoder features BEFORE the projector, cached per (text-encoder
    fingerprint, texts)."""
    from mcip.data.cache import FeatureCache, cache_key
    from mcip.models.fingerprint import model_fingerprint

    texts = list(texts)

    def features(batch: list[str]) -> torch.Tensor:
        tokens = {k: v.to(model.device) for k, v in model.tokenize(batch).items()}
        return model.text_features(tokens).float().cpu()

    width = features(["a"]).shape[-1]
    fingerprint = model_fingerprint(model, ("text_encoder",))
    key = cache_key("text-features", fingerprint, cache_key(*texts) if texts else "empty")
    return FeatureCache(cache_dir).get_or_compute(
        key,
        len(texts),
        width,
        lambda idx: features([texts[i] for i in idx]).numpy(),
        batch_size=batch_size,
        dtype="float32",
        desc=desc,
    )
