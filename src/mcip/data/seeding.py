"""Random augmentation as a function of (seed, epoch, position), not of which process loads an item when.

torchvision's random transforms draw from torch's global CPU generator, caption sampling too, and other
code may use ``random`` or numpy's global generator. In DataLoader workers those streams depend on a
base seed drawn when the epoch's loader starts and on which worker got which batch, so a resumed run
(which starts its loader mid-epoch) and even a different worker count would augment differently.
Here every item is computed inside :func:`seeded_rngs` with a key such as ``(seed, epoch, global batch,
position in the batch, index)``: the same item of the same epoch gets the same random numbers in any
process, and the caller's generator states are restored afterwards (so loading in the main process
leaves the training RNG, e.g. dropout, untouched).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SeededBatches", "SeededItems", "item_seeds", "seeded_rngs"]

_MASK64 = 2**64 - 1


def item_seeds(*key: int) -> tuple[int, int, list[int]]:
    """Seeds for (torch, python ``random``, numpy) from the integers of ``key``, mixed by numpy's
    ``SeedSequence`` (different keys give unrelated streams; negative integers are fine)."""
    words = np.random.SeedSequence([int(k) & _MASK64 for k in key]).generate_state(4, dtype=np.uint32)
    w = [int(x) for x in words]
    return (w[0] << 32) | w[1], (w[2] << 32) | w[3], w[2:]


ALL_RNGS = ("torch", "random", "numpy")


def _seed(*key: int, rngs: Sequence[str] = ALL_RNGS) -> None:
    """Seed the generators named in ``rngs`` (of :data:`ALL_RNGS`) from ``key``; each gets the seed it
    gets when all are seeded."""
    torch_seed, python_seed, numpy_seed = item_seeds(*key)
    if "torch" in rngs:
        torch.default_generator.manual_seed(torch_seed)
    if "random" in rngs:
        random.seed(python_seed)
    if "numpy" in rngs:
        np.random.seed(numpy_seed)


def rngs_of(dataset: Any) -> tuple[str, ...]:
    """The global generators ``dataset``'s items draw from: its ``rngs_used`` (a dataset that draws only
    from some declares them, and only those are seeded per item), else all of :data:`ALL_RNGS`."""
    used = tuple(getattr(dataset, "rngs_used", ALL_RNGS))
    unknown = set(used) - set(ALL_RNGS)
    if unknown:
        raise ValueError(f"rngs_used names unknown generators {sorted(unknown)}; use some of {ALL_RNGS}.")
    return used


@contextmanager
def _restored_rngs() -> Iterator[None]:
    """The body may reseed torch's CPU generator, ``random`` and numpy's; their states come back after."""
    saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        random.setstate(saved[1])
        np.random.set_state(saved[2])


@contextmanager
def seeded_rngs(*key: int) -> Iterator[None]:
    """Run the body with torch's CPU generator, ``random`` and numpy's global generator seeded from
    ``key`` (see :func:`item_seeds`); their previous states come back afterwards. CUDA generators are
    neither touched nor needed (augmentation runs on the CPU)."""
    with _restored_rngs():
        _seed(*key)
        yield


class SeededItems(Dataset):
    """``dataset`` read with keys: item ``(index, key)`` is ``dataset[index]`` computed under
    ``seeded_rngs(*key)``. Used with :class:`SeededBatches` as the batch sampler."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.rngs = rngs_of(dataset)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, tagged: tuple[int, Sequence[int]]) -> Any:
        index, key = tagged
        with seeded_rngs(*key):
            return self.dataset[index]

    def __getitems__(self, batch: Sequence[tuple[int, Sequence[int]]]) -> list[Any]:
        """A whole batch (the DataLoader's batched fetch): the items :meth:`__getitem__` gives one by
        one, with the caller's generator states saved and restored once per batch instead of once per
        item (saving and restoring them cost ~140 us, seeding ~40 us; Re-A batches of 256 cached
        captions spent 8% of the stage there, measured with py-spy on the lab). Only the generators the
        dataset uses are seeded (:func:`rngs_of`; Re-A's cached captions draw from torch's alone)."""
        out = []
        with _restored_rngs():
            for index, key in batch:
                _seed(*key, rngs=self.rngs)
                out.append(self.dataset[index])
        return out


class SeededBatches:
    """The batches of ``batch_sampler`` (already set to ``epoch`` and started at ``start``) with every
    index tagged ``(index, (seed, epoch, global batch, position, index))``. The global batch is
    ``b * world_size + rank`` for batch ``b`` of this rank, read from the sampler's ``rank`` and
    ``world_size`` (0 and 1 when it has none), so that the key names one draw of the epoch: an image
    drawn twice (e.g. class-balanced sampling with replacement) gets two different augmentations."""

    def __init__(self, batch_sampler: Any, seed: int, epoch: int, start: int) -> None:
        self.batch_sampler, self.seed, self.epoch, self.start = batch_sampler, seed, epoch, start

    def __len__(self) -> int:
        return len(self.batch_sampler) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, ...]]]]:
        rank = getattr(self.batch_sampler, "rank", 0)
        world = getattr(self.batch_sampler, "world_size", 1)
        for b, batch in enumerate(self.batch_sampler, start=self.start):
            step = b * world + rank
            yield [(i, (self.seed, self.epoch, step, j, i)) for j, i in enumerate(batch)]
