"""Frozen-tower features computed once and cached on disk (memory-mapped), keyed by model fingerprint.

- Re-A: image embeddings of the caption data (the image tower is frozen, SPEC section 2).
- MCIP: caption embeddings of the training data (the text tower is frozen, SPEC section 3).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mcip.data.cache import FeatureCache, RaggedFeatures, cache_key
from mcip.data.records import ImageRecord
from mcip.embed import encode_images
from mcip.models.base import EmbeddingModel
from mcip.models.fingerprint import IMAGE_PARTS, TEXT_PARTS, model_fingerprint
from mcip.train.distributed import barrier, current


def default_cache_dir() -> Path:
    env = os.environ.get("MCIP_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mcip" / "features"


def _fill_once(cache: FeatureCache, key: str, *args, **kwargs) -> np.ndarray:
    """``cache.get_or_compute`` with one writer: under DDP rank 0 fills the cache, the others then read it."""
    info = current()
    if info.world_size > 1 and info.rank != 0:
        barrier()
        return cache.get_or_compute(key, *args, **kwargs)
    out = cache.get_or_compute(key, *args, **kwargs)
    if info.world_size > 1:
        barrier()
    return out


def _records_key(records: Sequence[ImageRecord]) -> str:
    return cache_key(*(f"{r.id}|{r.path}" for r in records))


@torch.no_grad()
def image_embeddings(
    model: EmbeddingModel, records: Sequence[ImageRecord], cache_dir: Path, batch_size: int = 64
) -> np.ndarray:
    """(N, D) float16 L2-normalised image embeddings (eval transform); unreadable images give NaN rows."""

    def compute(indices: list[int]) -> np.ndarray:
        out = np.full((len(indices), model.embed_dim), np.nan, dtype=np.float32)  # NaN: unreadable image
        encoded = encode_images(model, [records[i].path for i in indices], len(indices), progress=False)
        out[encoded.rows] = encoded.embeddings
        return out

    key = cache_key("image", model_fingerprint(model, IMAGE_PARTS), _records_key(records))
    return _fill_once(
        FeatureCache(cache_dir),
        key,
        len(records),
        model.embed_dim,
        compute,
        batch_size=batch_size,
        desc="caching image embeddings",
    )


@torch.no_grad()
def caption_embeddings(
    model: EmbeddingModel, records: Sequence[ImageRecord], cache_dir: Path, batch_size: int = 256
) -> RaggedFeatures:
    """Embeddings of every caption of every record (frozen text tower), as ragged rows per record."""
    texts = [c for r in records for c in r.captions]
    counts = np.array([len(r.captions) for r in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])

    def compute(indices: list[int]) -> np.ndarray:
        return model.encode_text([texts[i] for i in indices]).float().cpu().numpy()

    key = cache_key("text", model_fingerprint(model, TEXT_PARTS), cache_key(*texts) if texts else "empty")
    width = model.encode_text(["a"]).shape[-1]
    features = _fill_once(
        FeatureCache(cache_dir),
        key,
        len(texts),
        width,
        compute,
        batch_size=batch_size,
        desc="caching caption embeddings",
    )
    return RaggedFeatures(offsets, features)
