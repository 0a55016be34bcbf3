"""Batch samplers: rank-disjoint, deterministic per epoch, resumable; class-balanced batches."""

from __future__ import annotations

from collections import Counter

import pytest

from mcip.data import ClassBalancedBatchSampler, EpochBatchSampler
from mcip.errors import ConfigError


def _epoch(sampler, epoch: int, start: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    sampler.set_start(start)
    return list(sampler)


def test_ranks_are_disjoint_and_cover_the_used_samples():
    n, bs, world = 103, 4, 3
    samplers = [EpochBatchSampler(n, bs, seed=7, rank=r, world_size=world) for r in range(world)]
    per_rank = [[i for b in _epoch(s, 2) for i in b] for s in samplers]
    assert {len(s) for s in samplers} == {n // (bs * world)}
    assert all(len(b) == bs for s in samplers for b in _epoch(s, 2))
    flat = [i for part in per_rank for i in part]
    assert len(flat) == len(set(flat)) == (n // (bs * world)) * bs * world
    assert set(flat) <= set(range(n))


def test_no_drop_last_pads_so_every_sample_is_seen_and_ranks_have_equal_batches():
    samplers = [EpochBatchSampler(10, 3, seed=0, drop_last=False, rank=r, world_size=2) for r in range(2)]
    batches = [_epoch(s, 0) for s in samplers]
    assert len(batches[0]) == len(batches[1]) == 2
    assert {i for bs in batches for b in bs for i in b} == set(range(10))


def test_deterministic_per_epoch_and_different_across_epochs():
    a, b = EpochBatchSampler(50, 5, seed=3), EpochBatchSampler(50, 5, seed=3)
    assert _epoch(a, 1) == _epoch(b, 1)
    assert _epoch(a, 1) != _epoch(a, 2)
    assert _epoch(EpochBatchSampler(50, 5, seed=3, shuffle=False), 4)[0] == [0, 1, 2, 3, 4]


def test_set_start_yields_the_tail_of_the_same_epoch_and_set_epoch_clears_it():
    s = EpochBatchSampler(40, 4, seed=1, rank=1, world_size=2)
    full = _epoch(s, 3)
    assert _epoch(s, 3, start=2) == full[2:]
    s.set_start(len(s))
    assert list(s) == []
    s.set_epoch(3)
    assert list(s) == full
    with pytest.raises(ConfigError, match="start batch"):
        s.set_start(len(s) + 1)


def test_epoch_sampler_rejects_too_little_data():
    with pytest.raises(ConfigError, match="do not fill one batch"):
        EpochBatchSampler(7, 4, world_size=2)


def test_class_balanced_batches_have_k_classes_with_m_each():
    labels = [c for c in range(10) for _ in range(2 + c)]  # class 0 has 2 images (< m)
    s = ClassBalancedBatchSampler(labels, m_per_class=3, batch_size=12, seed=0)
    assert len(s) == len(labels) // 12
    for batch in _epoch(s, 0):
        counts = Counter(labels[i] for i in batch)
        assert len(batch) == 12 and len(counts) == 4 and set(counts.values()) == {3}
        for c in counts:
            items = [i for i in batch if labels[i] == c]
            if c >= 1:  # classes with >= m images: no repeats within the batch
                assert len(set(items)) == 3


def test_class_balanced_ranks_resume_and_determinism():
    labels = [c % 7 for c in range(140)]
    make = lambda r: ClassBalancedBatchSampler(labels, 2, 8, seed=4, rank=r, world_size=2)  # noqa: E731
    r0, r1 = make(0), make(1)
    assert len(r0) == len(r1) == 140 // 16
    assert _epoch(r0, 1) != _epoch(r1, 1)
    assert _epoch(r0, 1) == _epoch(make(0), 1)
    assert _epoch(r0, 1, start=3) == _epoch(r0, 1)[3:]
    assert _epoch(r0, 1) != _epoch(r0, 2)


def test_class_balanced_rejects_bad_settings():
    with pytest.raises(ConfigError, match="multiple of m_per_class"):
        ClassBalancedBatchSampler([0, 1, 2], 2, 5)
    with pytest.raises(ConfigError, match="needs 3 classes but the data has 2"):
        ClassBalancedBatchSampler([0, 0, 1, 1], 2, 6)
