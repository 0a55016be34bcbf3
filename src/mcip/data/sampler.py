"""Batch samplers that are deterministic per epoch, split across ranks, and resumable mid-epoch.

Both samplers share one API: ``set_epoch(e)`` picks the epoch's order (and clears the start),
``set_start(b)`` makes the next iteration begin at batch ``b`` of that epoch, ``len()`` is the number
of batches per epoch on this rank (the same on every rank, so DDP ranks step together).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import torch

from mcip.errors import ConfigError


def _check_int(value: int, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_rank(rank: int, world_size: int) -> None:
    _check_int(world_size, "world_size", 1)
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ConfigError(f"rank must be in [0, world_size={world_size}), got {rank!r}.")


class _Resumable:
    """Epoch and start-batch bookkeeping shared by the samplers."""

    epoch: int = 0
    start: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order from now on; the start goes back to batch 0."""
        self.epoch, self.start = int(epoch), 0

    def set_start(self, batch: int) -> None:
        """Begin the next iterations at batch ``batch`` of the current epoch (0 <= batch <= len)."""
        if not 0 <= batch <= len(self):
            raise ConfigError(f"start batch must be in [0, {len(self)}], got {batch}.")
        self.start = int(batch)

    def __len__(self) -> int:
        raise NotImplementedError


class EpochBatchSampler(_Resumable):
    """Batches of indices into ``range(n)``; a fresh permutation each epoch (seeded by ``seed + epoch``).

    Global batch ``b`` is ``perm[b*W*B : (b+1)*W*B]`` and rank ``r`` takes its ``r``-th slice of ``B``,
    so ranks are disjoint. ``drop_last=True`` drops the tail that does not fill a global batch;
    ``drop_last=False`` pads it by wrapping around the permutation (a few samples seen twice).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_int(n, "n", 1)
        _check_int(batch_size, "batch_size", 1)
        _check_rank(rank, world_size)
        if drop_last and n < batch_size * world_size:
            raise ConfigError(
                f"{n} samples do not fill one batch of {batch_size} on each of {world_size} rank(s); "
                "lower batch_size or set drop_last=False."
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle, self.drop_last, self.rank, self.world_size = shuffle, drop_last, rank, world_size

    def __len__(self) -> int:
        per_global = self.batch_size * self.world_size
        return self.n // per_global if self.drop_last else -(-self.n // per_global)

    def order(self) -> torch.Tensor:
        """(n,) the epoch's order of all indices (every rank computes the same)."""
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.order()
        need = len(self) * self.batch_size * self.world_size
        if need > self.n:
            perm = perm.repeat(-(-need // self.n))
        for b in range(self.start, len(self)):
            lo = (b * self.world_size + self.rank) * self.batch_size
            yield perm[lo : lo + self.batch_size].tolist()


class ClassBalancedBatchSampler(_Resumable):
    """Batches of ``batch_size // m_per_class`` distinct classes x ``m_per_class`` images each.

    Classes are drawn uniformly without replacement within a batch; images within a class without
    replacement, or with replacement for classes that have fewer than ``m_per_class`` images. Each
    global batch has its own generator seeded by ``(seed, epoch, batch)``, so a rank computes only its
    own batches and a resumed epoch starts directly at its batch. An epoch is
    ``max(1, n // (batch_size * world_size))`` batches per rank: about one pass worth of images, not
    an exact pass over every image.
    """

    def __init__(
        self,
        labels: Sequence[Hashable],
        m_per_class: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_int(m_per_class, "m_per_class", 1)
        _check_int(batch_size, "batch_size", 1)
        _check_int(seed, "seed", 0)
        _check_rank(rank, world_size)
        if batch_size % m_per_class:
            raise ConfigError(
                f"batch_size ({batch_size}) must be a multiple of m_per_class ({m_per_class}); "
                f"try batch_size={batch_size - batch_size % m_per_class or m_per_class}."
            )
        groups: dict[Hashable, list[int]] = {}
        for i, label in enumerate(labels):
            groups.setdefault(label, []).append(i)
        self.classes_per_batch = batch_size // m_per_class
        if self.classes_per_batch > len(groups):
            raise ConfigError(
                f"A batch of {batch_size} with m_per_class={m_per_class} needs {self.classes_per_batch} "
                f"classes but the data has {len(groups)}; lower batch_size or raise m_per_class."
            )
        self.groups = [np.asarray(idx, dtype=np.int64) for idx in groups.values()]
        self.n, self.m, self.batch_size, self.seed = len(labels), m_per_class, batch_size, seed
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(1, self.n // (self.batch_size * self.world_size))

    def global_batch(self, b: int) -> list[int]:
        """Global batch ``b`` of the current epoch (rank ``r`` gets ``b * world_size + r``)."""
        rng = np.random.default_rng([self.seed, self.epoch, b])
        picked = rng.choice(len(self.groups), self.classes_per_batch, replace=False)
        batch: list[int] = []
        for c in picked:
            idx = self.groups[c]
            batch.extend(rng.choice(idx, self.m, replace=len(idx) < self.m).tolist())
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start, len(self)):
            yield self.global_batch(b * self.world_size + self.rank)
