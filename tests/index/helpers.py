"""Helpers for the index tests: synthetic PNGs and the exact top-k reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_pngs(root: Path, names: list[str], seed: int = 0, size: int = 40) -> list[Path]:
    """Random-colour noise PNGs at ``root/NAME`` (names may contain sub-folders)."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, 3)
        noise = rng.integers(-60, 60, (size, size, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def top_k(embeddings: np.ndarray, query: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    """Reference: exact top-k rows by inner product (float32), ties by row."""
    scores = embeddings.astype(np.float32) @ query.astype(np.float32)
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return order.tolist(), scores[order]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
