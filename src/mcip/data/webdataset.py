"""Webdataset-style tar shards for collections that do not fit on one disk (no webdataset package).

:class:`ShardDataset` streams samples shard by shard. Each epoch the shard list is shuffled with the
seed, dealt to the ranks (``shards[rank::world_size]``) and then to the DataLoader workers of each
rank; samples pass through a seeded shuffle buffer before decoding. Decoding is as robust as
``ImageDataset``: an unreadable sample becomes ``{"index": i, "error": "shard:key: reason"}``.
"""

from __future__ import annotations

import glob
import io
import os
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from torch.utils.data import IterableDataset, get_worker_info

from mcip.data.dataset import Transform, decode_image
from mcip.data.seeding import seeded_rngs
from mcip.data.tarshards import (
    _TAR_ERRORS,
    IMAGE_EXTS,
    iter_tar_samples,
    parse_meta,
    read_shard_records,
    write_shards,
)
from mcip.errors import ConfigError, InputError

__all__ = ["ShardDataset", "list_shards", "read_shard_records", "write_shards"]

_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}|\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``"a-{00..02}.tar"`` -> ``["a-00.tar", "a-01.tar", "a-02.tar"]``; ``{x,y}`` lists too."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    head, tail = pattern[: m.start()], pattern[m.end() :]
    if m.group(3) is not None:
        options = m.group(3).split(",")
    else:
        lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
        options = [f"{i:0{width}d}" for i in range(lo, hi + 1)]
    return [out for opt in options for out in expand_braces(head + opt + tail)]


def list_shards(pattern: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Shard paths from a brace range (``shards-{0000..0099}.tar``), a glob, a path, or a list of them."""
    patterns = [pattern] if isinstance(pattern, str | os.PathLike) else list(pattern)
    shards: list[Path] = []
    for pat in patterns:
        for path in expand_braces(os.fspath(pat)):
            if glob.has_magic(path):
                shards.extend(Path(p) for p in sorted(glob.glob(path)))
            elif Path(path).is_file():
                shards.append(Path(path))
            else:
                raise InputError(f"Shard not found: {path} (from the pattern {pat}).")
    if not shards:
        raise InputError(f"No shards match {pattern}; check the folder and the pattern.")
    return shards


class ShardDataset(IterableDataset):
    """Items ``{"pixels": (3, S, S), "label": int, "index": n}`` (or ``{"index": n, "error": str}``).

    ``index`` is the sample's position ``p`` in its worker's stream, made unique across the workers
    and ranks of an epoch as ``p * (world_size * num_workers) + rank * num_workers + worker``.
    Samples whose label is not in ``class_to_index`` are left out silently: that is how a class-held-out
    validation split applies to shards. Every rank needs at least one shard.

    Resuming: ``skip(n)`` drops the first ``n`` samples of this rank's stream without decoding them.
    With several DataLoader workers the rank's stream is interleaved batch by batch; pass
    ``batch_size`` so each worker skips the batches it contributed, assuming the round-robin order
    started at worker 0. Resume is then by sample count, in approximate order (exact with 0 workers).
    ``set_epoch`` clears the skip.

    Args:
        shards: shard paths (see :func:`list_shards`).
        transform: PIL image -> (3, S, S) tensor.
        class_to_index: label -> class index (``class_index(read_shard_records(shards))``).
        rank, world_size: this process and the number of processes (DDP).
        seed: shuffling seed (shard order and buffer).
        shuffle_buffer: samples held for shuffling across shards (0: shard order only).
        repeat: cycle over the rank's shards forever (each pass reshuffled); the loader then stops
            after a fixed number of batches, so every rank yields the same count.
    """

    def __init__(
        self,
        shards: Sequence[str | os.PathLike],
        transform: Transform,
        class_to_index: Mapping[str, int],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        repeat: bool = False,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"Need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
        if len(shards) < world_size:
            raise ConfigError(
                f"{len(shards)} shard(s) for {world_size} ranks: every rank needs at least one; "
                "write smaller shards (write_shards(..., per_shard=...))."
            )
        if shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}.")
        self.shards = [Path(s) for s in shards]
        self.transform, self.class_to_index = transform, dict(class_to_index)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_buffer, self.repeat = shuffle_buffer, repeat
        self.epoch, self._skip, self._skip_batch = 0, 0, None

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for ``epoch`` next time; clears :meth:`skip`."""
        self.epoch, self._skip, self._skip_batch = int(epoch), 0, None

    def skip(self, n: int, batch_size: int | None = None) -> None:
        """Start this epoch after the first ``n`` samples of this rank's stream (see class docstring)."""
        if n < 0:
            raise ConfigError(f"Cannot skip a negative number of samples ({n}).")
        self._skip, self._skip_batch = int(n), batch_size

    def _worker_skip(self, worker: int, num_workers: int) -> int:
        n, b = self._skip, self._skip_batch
        if num_workers == 1:
            return n
        if not b:
            return n // num_workers + (worker < n % num_workers)
        k = n // b
        return len(range(worker, k, num_workers)) * b + (n % b if k % num_workers == worker else 0)

    def _worker_shards(self, pass_: int, worker: int, num_workers: int) -> list[Path]:
        order = list(self.shards)
        random.Random(f"{self.seed}:{self.epoch}:{pass_}").shuffle(order)
        return order[self.rank :: self.world_size][worker::num_workers]

    def _raw(self, worker: int, num_workers: int) -> Iterator[tuple[str, dict | str, bytes | None]]:
        """``(where, meta or error, image bytes)`` for this worker's shards, one pass or forever."""
        pass_ = 0
        while True:
            shards = self._worker_shards(pass_, worker, num_workers)
            if not shards:
                return
            for shard in shards:
                yield from self._shard_samples(shard)
            if not self.repeat:
                return
            pass_ += 1

    def _shard_samples(self, shard: Path) -> Iterator[tuple[str, dict | str, bytes | None]]:
        try:
            for key, files in iter_tar_samples(shard):
                where = f"{shard}:{key}"
                meta = parse_meta(key, files, where)
                if isinstance(meta, dict) and meta["label"] not in self.class_to_index:
                    continue
                image = next((files[e] for e in IMAGE_EXTS if e in files), None)
                yield where, meta, image
        except _TAR_ERRORS as exc:
            yield str(shard), f"{shard}: unreadable shard: {type(exc).__name__}: {exc}", None

    def _shuffled(self, items: Iterator, rng: random.Random) -> Iterator:
        if self.shuffle_buffer == 0:
            yield from items
            return
        buffer: list = []
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], item = item, buffer[j]
            yield item
        rng.shuffle(buffer)
        yield from buffer

    def _decode(self, where: str, meta: dict | str, image: bytes | None, index: int) -> dict:
        if isinstance(meta, str):
            return {"index": index, "error": meta}
        if image is None:
            return {"index": index, "error": f"{where}: no image file ({', '.join(IMAGE_EXTS)})"}
        with seeded_rngs(self.seed, self.epoch, index):  # augmentation: a function of the sample
            pixels = decode_image(io.BytesIO(image), self.transform, where)
        if isinstance(pixels, str):
            return {"index": index, "error": pixels}
        return {"pixels": pixels, "label": self.class_to_index[meta["label"]], "index": index}

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        total = self.world_size * num_workers
        slot = self.rank * num_workers + worker
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}")
        skip = self._worker_skip(worker, num_workers)
        for pos, item in enumerate(self._shuffled(self._raw(worker, num_workers), rng)):
            if pos >= skip:
                yield self._decode(*item, index=pos * total + slot)
