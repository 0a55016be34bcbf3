"""The jobs each command gives the Ray engine (:mod:`mcip.index.ray_engine`), each the Ray twin of a
local function with the same result: ``mcip index build|add|rebuild`` (:func:`encode_records_ray`),
``mcip encode`` (:func:`encode_images_ray`) and ``mcip captions retrieve`` (:func:`embed_images_ray`,
:func:`embed_texts_ray`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mcip.index.ray_engine import RayOptions, Sharded, run_sharded
from mcip.models.base import EmbeddingModel


def encode_records_ray(
    model: EmbeddingModel,
    records: Sequence,
    staging: Path,
    key: str,
    batch_size: int = 64,
    progress: bool = True,
    compile: bool = False,
    options: RayOptions | None = None,
):
    """:func:`mcip.index.encode.encode_records` on Ray: the same :class:`~mcip.index.encode.Encoded`
    ((n, D) float16 rows in ``staging/features.npy``, NaN rows unreadable; skipped files; content hashes),
    resumable by shard instead of by batch."""
    from mcip.index.encode import Encoded

    sharded = run_sharded(model, records, staging, key, batch_size, options, progress, compile, True)
    embeddings = _float16_rows(sharded, staging / "features.npy", len(records), int(model.embed_dim))
    skipped, hashes = {}, {}
    for _, _, errors, shard_hashes in sharded:
        skipped.update({str(records[row].path): errors[row] for row in sorted(errors)})
        hashes.update(shard_hashes)
    return Encoded(embeddings, skipped, sharded.resumed_rows, sharded.seconds, hashes), sharded


def _float16_rows(sharded: Sharded, path: Path, n: int, dim: int) -> np.ndarray:
    """The shards' (n, D) rows as float16 in a memory map at ``path`` (float32 -> float16 as the local
    path's memory maps round them; NaN rows stay NaN), opened read-only."""
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for lo, emb, _, _ in sharded:
        rows[lo : lo + len(emb)] = emb
    rows.flush()
    del rows
    return np.load(path, mmap_mode="r")


def embed_images_ray(
    model: EmbeddingModel,
    paths: Sequence,
    staging: Path,
    batch_size: int = 64,
    progress: bool = True,
    options: RayOptions | None = None,
) -> tuple[np.ndarray, Sharded]:
    """:func:`mcip.embed.cached_image_embeddings` on Ray: (N, D) float16 unit rows (NaN: unreadable) in
    ``staging/features.npy``, computed in the same batches, resumable by shard in ``staging``."""
    from mcip.embed import image_embeddings_key

    paths = [Path(p) for p in paths]
    key = image_embeddings_key(model, paths)
    sharded = run_sharded(model, paths, staging, key, batch_size, options, progress, False, False)
    return _float16_rows(sharded, staging / "features.npy", len(paths), int(model.embed_dim)), sharded


def embed_texts_ray(
    model: EmbeddingModel,
    texts: Sequence[str],
    staging: Path,
    batch_size: int = 256,
    progress: bool = True,
    options: RayOptions | None = None,
) -> tuple[np.ndarray, Sharded]:
    """:func:`mcip.embed.cached_text_embeddings` on Ray: (T, D) float16 unit rows in
    ``staging/features.npy``, computed in the same batches, resumable by shard in ``staging``."""
    from mcip.embed import text_embeddings_key

    texts = list(texts)
    key = text_embeddings_key(model, texts)
    sharded = run_sharded(model, texts, staging, key, batch_size, options, progress, texts=True)
    return _float16_rows(sharded, staging / "features.npy", len(texts), int(model.embed_dim)), sharded


def encode_images_ray(
    model: EmbeddingModel,
    paths: Sequence[Path],
    staging: Path,
    batch_size: int = 32,
    progress: bool = True,
    compile: bool = False,
    options: RayOptions | None = None,
):
    """:func:`mcip.embed.encode_images` on Ray (the same :class:`~mcip.embed.EncodedImages`), resumable
    by shard in ``staging`` (the caller removes it once the result is written)."""
    from mcip.data.cache import cache_key
    from mcip.data.images import eval_decoding
    from mcip.embed import EncodedImages
    from mcip.models.fingerprint import IMAGE_PARTS, model_fingerprint

    paths = [Path(p) for p in paths]
    image_fp = model_fingerprint(model, IMAGE_PARTS)
    key = cache_key("mcip-encode", image_fp, eval_decoding(), cache_key(*map(str, paths)))
    sharded = run_sharded(model, paths, staging, key, batch_size, options, progress, compile, False)
    chunks, rows, skipped = [], [], {}
    for lo, emb, errors, _ in sharded:
        ok = ~np.isnan(emb[:, 0])
        chunks.append(emb[ok])
        rows.extend((lo + np.flatnonzero(ok)).tolist())
        skipped.update({str(paths[row]): errors[row] for row in sorted(errors)})
    dim = int(model.embed_dim)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return EncodedImages(emb, [paths[r] for r in rows], skipped, sharded.seconds, rows), sharded
