"""Resumable loaders: iterate(epoch, start) is the tail of iterate(epoch, 0)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from mcip.data import (
    EpochBatchSampler,
    ImageDataset,
    ImageRecord,
    ResumableLoader,
    ResumableShardLoader,
    ShardDataset,
    class_index,
    collate_images,
    read_image_folder,
    write_shards,
)
from mcip.errors import ConfigError
from tests.data.conftest import to_pixels


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterate_from_start_equals_the_tail(image_folder, bad_files, num_workers):
    recs = [*read_image_folder(image_folder), ImageRecord("bad", bad_files["corrupt"], "ant")]
    ds = ImageDataset(recs, to_pixels)
    loader = ResumableLoader(
        ds, EpochBatchSampler(len(ds), 3, seed=5), collate_images, num_workers=num_workers
    )
    assert loader.batches_per_epoch == 13 // 3
    full = list(loader.iterate(epoch=2))
    tail = list(loader.iterate(epoch=2, start_batch=2))
    assert len(full) == 4 and len(tail) == 2
    for a, b in zip(full[2:], tail, strict=True):
        assert a["index"].tolist() == b["index"].tolist() and a["skipped"] == b["skipped"]
        assert (a["pixels"] == b["pixels"]).all()
    assert [b["index"].tolist() for b in loader.iterate(2)] == [b["index"].tolist() for b in full]
    assert [b["index"].tolist() for b in loader.iterate(3)] != [b["index"].tolist() for b in full]
    with pytest.raises(ConfigError, match="start_batch"):
        next(loader.iterate(2, start_batch=5))


def _shard_loader(tmp_path, image_folder, num_workers):
    recs = read_image_folder(image_folder)
    paths = write_shards(recs, tmp_path / "shards", per_shard=3)
    ds = ShardDataset(paths, to_pixels, class_index(recs), seed=1, shuffle_buffer=4)
    return ResumableShardLoader(ds, 2, collate_images, num_records=len(recs), num_workers=num_workers)


def test_shard_loader_resume_is_exact_without_workers(tmp_path, image_folder):
    loader = _shard_loader(tmp_path, image_folder, 0)
    assert loader.batches_per_epoch == 6
    full = [b["index"].tolist() for b in loader.iterate(1)]
    assert len(full) == 6
    assert [b["index"].tolist() for b in loader.iterate(1, start_batch=4)] == full[4:]


def test_shard_loader_resume_with_workers_skips_what_was_consumed(tmp_path, image_folder):
    loader = _shard_loader(tmp_path, image_folder, 2)
    full = [i for b in loader.iterate(1) for i in b["index"].tolist()]
    assert len(full) == 12 and len(set(full)) == 12
    done = set(full[:6])  # three batches consumed before the "crash"
    resumed = [i for b in loader.iterate(1, start_batch=3) for i in b["index"].tolist()]
    assert len(resumed) == 6 and not done & set(resumed)


def test_shard_loader_repeats_so_every_rank_yields_batches_per_epoch(tmp_path, image_folder):
    recs = read_image_folder(image_folder)
    paths = write_shards(recs, tmp_path / "shards", per_shard=5)  # 5 + 5 + 2: uneven ranks
    counts = []
    for rank in range(2):
        ds = ShardDataset(paths, to_pixels, class_index(recs), rank=rank, world_size=2)
        loader = ResumableShardLoader(ds, 2, collate_images, num_records=len(recs))
        counts.append(len(list(loader.iterate(0))))
    assert counts == [3, 3]


class _NumpyDraws(torch.utils.data.Dataset):
    """Each item is a numpy draw: shows how workers' numpy RNGs are seeded."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "draw": float(np.random.rand())}


def _draws(loader) -> list[float]:
    return [d for batch in loader.iterate(0) for d in batch]


def _draws_of(items: list[dict]) -> list[float]:
    return [it["draw"] for it in items]


def _as_list(items: list) -> list:
    return items


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_worker_numpy_draws_are_reproducible_and_differ_between_workers(method, monkeypatch):
    monkeypatch.setenv("MCIP_WORKER_START", method)
    loader = ResumableLoader(_NumpyDraws(), EpochBatchSampler(8, 2, shuffle=False), _draws_of, num_workers=2)
    torch.manual_seed(0)
    first = _draws(loader)
    torch.manual_seed(0)
    assert _draws(loader) == first  # reproducible from torch's RNG state
    assert first[0:2] != first[2:4]  # the two workers draw different numbers


class _PidDraws(torch.utils.data.Dataset):
    """Each item: its index, a torch draw (what augmentation uses) and the process that made it."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "draw": float(torch.rand(())), "pid": os.getpid(), "parent": os.getppid()}


def _epoch(loader, epoch: int, start: int = 0, stop: int | None = None) -> tuple[list, set]:
    items, pids = [], set()
    for b, batch in enumerate(loader.iterate(epoch, start), start=start):
        if stop is not None and b >= stop:
            break  # abandoned mid-epoch, as max_steps or a stop signal does
        items += [(it["index"], it["draw"]) for it in batch]
        pids |= {it["pid"] for it in batch}
    return items, pids


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_workers_persist_across_epochs_and_change_no_batch(method, monkeypatch):
    monkeypatch.setenv("MCIP_WORKER_START", method)
    plain = ResumableLoader(_PidDraws(), EpochBatchSampler(12, 3, shuffle=True, seed=4), _as_list)
    kept = ResumableLoader(
        _PidDraws(), EpochBatchSampler(12, 3, shuffle=True, seed=4), _as_list, num_workers=2
    )
    expected = [_epoch(plain, e)[0] for e in range(3)]
    got, pids = [], []
    for e in range(3):
        items, seen = _epoch(kept, e)
        got.append(items)
        pids.append(seen)
    assert got == expected  # same indices, order and draws as loading in this process
    assert os.getpid() not in pids[0] and len(pids[0]) == 2
    parents = {it["parent"] for batch in kept.iterate(0) for it in batch}
    # fork: the workers are children of this process (sharing its pages); forkserver: of the fork server
    assert (parents == {os.getpid()}) == (method == "fork") and len(parents) == 1
    assert pids[0] == pids[1] == pids[2]  # the same two worker processes served every epoch
    # abandoned mid-epoch, then resumed: the tail is unchanged
    head, _ = _epoch(kept, 1, stop=2)
    assert head == expected[1][:6]
    tail, tail_pids = _epoch(kept, 1, start=2)
    assert tail == expected[1][6:] and tail_pids == pids[0]
    kept.close()
    after, after_pids = _epoch(kept, 0)
    assert after == expected[0] and not after_pids & pids[0]  # close ended them; new workers start
    kept.close()
