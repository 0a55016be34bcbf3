"""DataLoaders that can start an epoch at any batch: what a resumed run needs to continue mid-epoch.

``iterate(epoch, start_batch)`` yields the same batches (same indices, same order) as the tail of
``iterate(epoch, 0)`` for map-style data, augmented identically: every item is computed with the
random generators seeded from (seed, epoch, its position in the epoch) (:mod:`mcip.data.seeding`), so
neither the worker count nor where a run resumed changes it, and the main process's generators (e.g.
dropout, restored from a checkpoint) are left alone. Shards: each sample is seeded by (seed, epoch,
its index in the epoch's stream).

Workers ignore SIGINT, SIGTERM and SIGUSR1: a scheduler signals every process of a job, and the main
process stops training cleanly on them (mcip.engine.preempt), then ends its workers.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mcip.data.seeding import SeededBatches, SeededItems, item_seeds
from mcip.data.webdataset import ShardDataset
from mcip.data.workers import worker_context
from mcip.errors import ConfigError


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and ``numpy`` in a DataLoader worker from torch's per-worker seed; ignore the
    signals that stop training (the main process handles them, then ends the workers)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator a DataLoader draws its worker base seed from: one per (seed, epoch), so that
    starting a loader never draws from (and so never shifts) torch's global generator."""
    return torch.Generator().manual_seed(item_seeds(seed, epoch, -1)[0])


def _check_start(start_batch: int, batches_per_epoch: int) -> None:
    if not 0 <= start_batch <= batches_per_epoch:
        raise ConfigError(f"start_batch must be in [0, {batches_per_epoch}], got {start_batch}.")


class ResumableLoader:
    """A map-style dataset + a resumable batch sampler (``EpochBatchSampler`` or ``ClassBalancedBatchSampler``).

    Args:
        dataset: e.g. ``ImageDataset``.
        batch_sampler: has ``set_epoch``, ``set_start`` and ``len()``.
        collate_fn: e.g. ``collate_images``.
        num_workers: DataLoader worker processes (0: load in this process).
        pin_memory: pin batches for faster host-to-GPU copies.
        seed: of the augmentation (see the module docstring); default the sampler's ``seed`` (or 0).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_sampler: Any,
        collate_fn: Callable,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int | None = None,
    ) -> None:
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}.")
        self.dataset, self.batch_sampler, self.collate_fn = dataset, batch_sampler, collate_fn
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.seed = int(getattr(batch_sampler, "seed", 0) if seed is None else seed)
        self._batches = SeededBatches(batch_sampler, self.seed, 0, 0)
        self._loader: DataLoader | None = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.batch_sampler)

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Any]:
        """The batches of ``epoch`` from ``start_batch`` on.

        The worker processes are started once and kept for every epoch (``persistent_workers``) until
        :meth:`close`: forking them again each epoch cost the kernel a fresh copy of every page the
        training process wrote while they lived (copy-on-write), a large share of a short run's system time.
        Items carry their own seeds (module docstring), so reusing workers changes no batch. How the
        workers start (fork, forkserver): :mod:`mcip.data.workers`."""
        _check_start(start_batch, self.batches_per_epoch)
        self.batch_sampler.set_epoch(epoch)
        self.batch_sampler.set_start(start_batch)
        self._batches.epoch, self._batches.start = epoch, start_batch  # read when iteration starts
        if self._loader is None:
            self._loader = DataLoader(
                SeededItems(self.dataset),
                batch_sampler=self._batches,
                collate_fn=self.collate_fn,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                persistent_workers=self.num_workers > 0,
                worker_init_fn=seed_worker if self.num_workers else None,
                generator=epoch_generator(self.seed, 0),  # never draws from torch's global generator
                multiprocessing_context=worker_context(self.num_workers),
            )
        yield from self._loader

    def close(self) -> None:
        """End the worker processes (a later :meth:`iterate` starts new ones)."""
        loader, self._loader = self._loader, None
        workers = getattr(loader, "_iterator", None)
        if workers is not None and hasattr(workers, "_shutdown_workers"):
            workers._shutdown_workers()


class ResumableShardLoader:
    """The same API over a :class:`ShardDataset` (an iterable dataset).

    ``batches_per_epoch`` is ``max(1, num_records // (batch_size * world_size))``: an epoch is defined
    by a sample count, not by an exact pass over the shards. With ``repeat=True`` (the default) the
    dataset cycles over its shards, so every rank yields exactly ``batches_per_epoch`` batches (DDP
    ranks never wait on one another); with ``repeat=False`` an epoch may end early on a rank whose
    shards run out. Resuming skips ``start_batch * batch_size`` samples (see ``ShardDataset.skip``):
    exact with 0 workers, approximate in order with several.

    Args:
        dataset: the shards of this rank (``rank`` / ``world_size`` set on it).
        batch_size: samples per batch on this rank.
        collate_fn: e.g. ``collate_images``.
        num_records: samples in all shards (``len(read_shard_records(shards))`` of the kept classes).
        num_workers, pin_memory: as for :class:`ResumableLoader`.
        repeat: set on the dataset (see above).
    """

    def __init__(
        self,
        dataset: ShardDataset,
        batch_size: int,
        collate_fn: Callable,
        num_records: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        repeat: bool = True,
    ) -> None:
        if batch_size < 1 or num_records < 1 or num_workers < 0:
            raise ConfigError(
                f"Need batch_size >= 1, num_records >= 1 and num_workers >= 0; got {batch_size}, "
                f"{num_records}, {num_workers}."
            )
        self.dataset, self.batch_size, self.collate_fn = dataset, batch_size, collate_fn
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.dataset.repeat = repeat
        self.batches_per_epoch = max(1, num_records // (batch_size * dataset.world_size))

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Any]:
        """At most ``batches_per_epoch - start_batch`` batches of ``epoch``."""
        _check_start(start_batch, self.batches_per_epoch)
        self.dataset.set_epoch(epoch)
        self.dataset.skip(start_batch * self.batch_size, batch_size=self.batch_size)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            worker_init_fn=seed_worker if self.num_workers else None,
            generator=epoch_generator(self.dataset.seed, epoch),
            multiprocessing_context=worker_context(self.num_workers),
        )
        remaining = self.batches_per_epoch - start_batch
        if remaining <= 0:
            return
        for i, batch in enumerate(loader):
            yield batch
            if i + 1 >= remaining:
                return
