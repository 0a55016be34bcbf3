"""Validation split by class: deterministic, class-disjoint, independent of record order."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mcip.data import ImageRecord, split_by_class
from mcip.errors import ConfigError, InputError


def _records(n_classes: int, per_class: int = 3) -> list[ImageRecord]:
    return [
        ImageRecord(f"c{c}/{i}", Path(f"c{c}/{i}.png"), f"c{c}")
        for c in range(n_classes)
        for i in range(per_class)
    ]


def _ids(recs) -> set[str]:
    return {r.id for r in recs}


def test_whole_classes_go_to_val_and_parts_are_disjoint_and_cover():
    recs = _records(40)
    train, val = split_by_class(recs, val_fraction=0.1, seed=0)
    val_classes = {r.label for r in val}
    assert len(val_classes) == 4
    assert val_classes.isdisjoint(r.label for r in train)
    assert _ids(train) | _ids(val) == _ids(recs) and not _ids(train) & _ids(val)
    assert len(val) == 4 * 3


def test_deterministic_for_a_seed_and_independent_of_record_order():
    recs = _records(30)
    shuffled = list(recs)
    random.Random(1).shuffle(shuffled)
    a, b = split_by_class(recs, 0.2, seed=5), split_by_class(shuffled, 0.2, seed=5)
    assert _ids(a[1]) == _ids(b[1]) and _ids(a[0]) == _ids(b[0])
    seeds = {frozenset(r.label for r in split_by_class(recs, 0.2, seed=s)[1]) for s in range(5)}
    assert len(seeds) > 1  # the seed matters


def test_at_least_one_class_and_zero_fraction():
    train, val = split_by_class(_records(3), val_fraction=0.01)
    assert len({r.label for r in val}) == 1 and len({r.label for r in train}) == 2
    train, val = split_by_class(_records(3), val_fraction=0)
    assert len(train) == 9 and val == []


def test_errors():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        split_by_class(_records(1), 0.5)
    with pytest.raises(ConfigError, match="leave none for training"):
        split_by_class(_records(2), 0.9)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        split_by_class(_records(5), 1.0)
    with pytest.raises(InputError, match="No records"):
        split_by_class([], 0.1)
