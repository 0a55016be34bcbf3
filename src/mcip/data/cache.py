"""Features computed once, stored on disk, memory-mapped, resumable after a crash.

Layout of ``FeatureCache(root)`` for a key::

    root/KEY/features.npy     (n, dim) array (numpy .npy, written through a memory map)
    root/KEY/progress.json    {"rows": k, "n": n, "dim": dim, "dtype": ...}: rows 0..k-1 are on disk
    root/KEY/complete.json    written last: the cache is complete and is opened read-only

The key should change with everything the features depend on (model weights, the inputs); build it
with :func:`cache_key`. One process should fill a key at a time (under DDP: rank 0, then a barrier).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mcip._io import atomic_write_json
from mcip.errors import ConfigError, InputError


def cache_key(*parts: str) -> str:
    """First 16 hex digits of the sha256 of the parts (unambiguous: ``("ab", "c") != ("a", "bc")``)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _write_json(path: Path, data: dict) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    atomic_write_json(path, data)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _as_numpy(rows: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(rows, torch.Tensor):
        return rows.detach().to("cpu", torch.float32).numpy()
    return np.asarray(rows)


class FeatureCache:
    """A folder of cached feature matrices, one sub-folder per key."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def get_or_compute(
        self,
        key: str,
        n: int,
        dim: int,
        compute: Callable[[list[int]], np.ndarray | torch.Tensor],
        batch_size: int = 256,
        dtype: str = "float16",
        desc: str = "caching features",
    ) -> np.memmap:
        """The (n, dim) features of ``key``, read-only memory-mapped; missing rows computed first.

        ``compute(indices)`` returns the (len(indices), dim) rows for ``indices`` (consecutive, at
        most ``batch_size``). After each chunk the rows are flushed and the progress recorded, so an
        interrupted run resumes at the first missing chunk. A stored cache of another shape or dtype
        is recomputed, with a warning.
        """
        if n < 0 or dim < 1 or batch_size < 1:
            raise ConfigError(f"Need n >= 0, dim >= 1, batch_size >= 1; got {n}, {dim}, {batch_size}.")
        if not (np.issubdtype(np.dtype(dtype), np.floating) or np.dtype(dtype) == np.uint8):
            raise ConfigError(
                f"dtype must be a float type such as 'float16' or 'float32' (or 'uint8' for pixels), got "
                f"{dtype!r}."
            )
        folder = self.root / key
        meta = {"n": n, "dim": dim, "dtype": np.dtype(dtype).name}
        done = self._rows_done(folder, meta)
        if done == n and (folder / "complete.json").is_file():
            return np.load(folder / "features.npy", mmap_mode="r")
        out = self._open(folder, meta, fresh=done == 0)
        self._fill(out, folder, meta, done, compute, batch_size, desc)
        _write_json(folder / "complete.json", meta)
        return np.load(folder / "features.npy", mmap_mode="r")

    def get(self, key: str, n: int) -> np.memmap | None:
        """The complete (n, dim) features of ``key``, read-only memory-mapped, or None when ``key`` has
        no complete cache of ``n`` rows (nothing is computed)."""
        folder = self.root / key
        complete = _read_json(folder / "complete.json")
        if complete is None or complete.get("n") != n or not (folder / "features.npy").is_file():
            return None
        return np.load(folder / "features.npy", mmap_mode="r")

    def _rows_done(self, folder: Path, meta: dict) -> int:
        """Rows already on disk for ``meta``; 0 (after a warning) if the stored cache does not match."""
        progress = _read_json(folder / "progress.json")
        if progress is None or not (folder / "features.npy").is_file():
            return 0
        stored = {k: progress.get(k) for k in meta}
        if stored != meta:
            warnings.warn(
                f"Feature cache {folder} holds {stored}, expected {meta}; recomputing it.", stacklevel=3
            )
            return 0
        return int(progress.get("rows", 0))

    def _open(self, folder: Path, meta: dict, fresh: bool) -> np.memmap:
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            out = np.lib.format.open_memmap(
                folder / "features.npy", mode="w+", dtype=meta["dtype"], shape=(meta["n"], meta["dim"])
            )
            _write_json(folder / "progress.json", {**meta, "rows": 0})
            return out
        return np.lib.format.open_memmap(folder / "features.npy", mode="r+")

    def _fill(self, out, folder, meta, start, compute, batch_size, desc) -> None:
        n, dim = meta["n"], meta["dim"]
        with tqdm(total=n, initial=start, desc=desc, unit="row", dynamic_ncols=True) as bar:
            for lo in range(start, n, batch_size):
                indices = list(range(lo, min(lo + batch_size, n)))
                rows = _as_numpy(compute(indices))
                if rows.shape != (len(indices), dim):
                    raise InputError(
                        f"compute({len(indices)} indices) returned shape {tuple(rows.shape)}, expected "
                        f"({len(indices)}, {dim}); it must return one row of width dim per index."
                    )
                out[lo : lo + len(indices)] = rows
                out.flush()
                _write_json(folder / "progress.json", {**meta, "rows": lo + len(indices)})
                bar.update(len(indices))
        del out


class IndexedRows:
    """Rows ``base[index[i]]`` without copying ``base`` (a memory map of the distinct rows): ``view[i]``,
    ``view[array]`` and ``view[a:b]`` read only the rows asked for. Shapes ``(len(index), dim)``."""

    def __init__(self, base: np.ndarray, index: np.ndarray) -> None:
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        if self.index.ndim != 1 or (
            self.index.size and (self.index.min() < 0 or self.index.max() >= len(base))
        ):
            raise InputError(f"index must be 1-D with values in [0, {len(base)}).")
        self.shape = (len(self.index), *base.shape[1:])
        self.ndim, self.dtype = len(self.shape), base.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        return np.asarray(self.base[self.index[key]])

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.base[self.index])
        return out if dtype is None else out.astype(dtype)


class RaggedFeatures:
    """A variable number of feature rows per record, e.g. the embeddings of each image's captions.

    Args:
        offsets: (n + 1,) int64, non-decreasing from 0; record ``i`` owns rows ``offsets[i]:offsets[i+1]``.
        features: (total, dim) rows (often the memory map of :meth:`FeatureCache.get_or_compute`
            over the flat caption list).
    """

    def __init__(self, offsets: Sequence[int] | np.ndarray, features: np.ndarray) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise InputError("offsets must be a 1-D non-decreasing array starting at 0.")
        if features.ndim != 2 or offsets[-1] != features.shape[0]:
            raise InputError(
                f"offsets end at {offsets[-1]} but features have shape {tuple(features.shape)}; "
                "expected (offsets[-1], dim)."
            )
        self.offsets, self.features = offsets, features

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows_for(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (K, dim), owner (K,) long)`` for records ``indices`` (B,): ``owner[k] = j`` when row
        ``k`` belongs to ``indices[j]``; the ``caption_emb, caption_owner`` of ``MCArcMarginLoss``."""
        idx = torch.as_tensor(indices).cpu().numpy().astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise InputError(f"Record indices must be in [0, {len(self)}), got {idx.min()}..{idx.max()}.")
        starts, counts = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        owner = np.repeat(np.arange(len(idx)), counts)
        first = np.cumsum(counts) - counts
        rows = np.repeat(starts - first, counts) + np.arange(int(counts.sum()))
        feats = np.asarray(self.features[rows])
        return torch.from_numpy(feats).to(dtype), torch.from_numpy(owner).long()

    @classmethod
    def from_cache(
        cls,
        cache: FeatureCache,
        key: str,
        offsets: Sequence[int] | np.ndarray,
        dim: int,
        compute: Callable[[list[int]], np.ndarray | torch.Tensor],
        **kwargs,
    ) -> RaggedFeatures:
        """Compute (or load) the flat rows ``0..offsets[-1]-1`` through ``cache`` and wrap them."""
        total = int(np.asarray(offsets)[-1])
        return cls(offsets, cache.get_or_compute(key, total, dim, compute, **kwargs))
