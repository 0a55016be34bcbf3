"""Frozen-tower features computed once and cached on disk (memory-mapped), keyed by model fingerprint.

- Re-A: image embeddings of the caption data (the image tower is frozen, SPEC section 2).
- MCIP: caption embeddings of the training data (the text tower is frozen, SPEC section 3).
- align with frozen encoders: their pooled features before the projectors (only projectors train).

Under DDP rank 0 fills a cache and the other ranks read it after a barrier (one writer per cache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from mcip.data.cache import IndexedRows, RaggedFeatures
from mcip.data.records import ImageRecord
from mcip.embed import (
    cached_image_embeddings,
    cached_image_features,
    cached_text_embeddings,
    cached_text_features,
    default_cache_dir,
)
from mcip.engine.distributed import barrier, current
from mcip.models.base import EmbeddingModel

__all__ = [
    "caption_embeddings",
    "default_cache_dir",
    "frozen_image_features",
    "frozen_text_features",
    "image_embeddings",
]

T = TypeVar("T")


def _rank0_first(fill: Callable[[], T]) -> T:
    info = current()
    if info.world_size > 1 and info.rank != 0:
        barrier()
        return fill()
    out = fill()
    if info.world_size > 1:
        barrier()
    return out


def image_embeddings(
    model: EmbeddingModel, records: Sequence[ImageRecord], cache_dir: Path, batch_size: int = 64
) -> np.ndarray:
    """(N, D) float16 L2-normalised image embeddings of ``records``; unreadable images give NaN rows."""
    paths = [r.path for r in records]
    return _rank0_first(
        lambda: cached_image_embeddings(model, paths, cache_dir, batch_size, "caching image embeddings")
    )


def distinct_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(the distinct texts in first-seen order, each text's index among them): a caption shared by many
    images (a class name, a template, a pool sentence) is encoded once."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
    return list(index), inverse


def caption_embeddings(
    model: EmbeddingModel, records: Sequence[ImageRecord], cache_dir: Path, batch_size: int = 256
) -> RaggedFeatures:
    """Embeddings of every caption of every record (frozen text tower), as ragged rows per record; each
    distinct caption is encoded once."""
    texts = [c for r in records for c in r.captions]
    counts = np.array([len(r.captions) for r in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    distinct, inverse = distinct_texts(texts)
    features = _rank0_first(
        lambda: cached_text_embeddings(model, distinct, cache_dir, batch_size, "caching caption embeddings")
    )
    return RaggedFeatures(offsets, IndexedRows(features, inverse))


def frozen_image_features(
    model: EmbeddingModel, records: Sequence[ImageRecord], cache_dir: Path, batch_size: int = 64
) -> np.ndarray:
    """(N, F_img) float32 image-encoder features of ``records`` (before the projector); NaN rows unreadable."""
    paths = [r.path for r in records]
    return _rank0_first(lambda: cached_image_features(model, paths, cache_dir, batch_size))


def frozen_text_features(
    model: EmbeddingModel, records: Sequence[ImageRecord], cache_dir: Path, batch_size: int = 256
) -> IndexedRows:
    """(T, F_txt) float32 text-encoder features of every caption of every record, in record order; each
    distinct caption is encoded once (the lab's 60,524 train captions hold 5,573 distinct texts)."""
    distinct, inverse = distinct_texts([c for r in records for c in r.captions])
    features = _rank0_first(lambda: cached_text_features(model, distinct, cache_dir, batch_size))
    return IndexedRows(features, inverse)
