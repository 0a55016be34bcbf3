"""Train / val / test splits of the lab: disjoint by base emoji, stratified by sub-category, seeded."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

# Ten slots: 6 train, 1 val, 3 test (60 / 10 / 30), interleaved so short runs get every split.
PATTERN = ("train", "test", "train", "val", "train", "test", "train", "train", "test", "train")


def assign_splits(subcategory_of: Mapping[str, str], seed: int = 0) -> dict[str, str]:
    """Base emoji -> split.

    Bases are grouped by sub-category (groups in name order), ordered inside each group by
    ``sha256(f"{seed}:{base}")`` (a seeded shuffle that does not depend on input order), laid end to end,
    and the i-th base gets ``PATTERN[i % 10]``. So the whole set is 60 / 10 / 30 up to one slot in ten,
    and each sub-category holds its share up to rounding (a sub-category of 1-3 bases cannot).
    """
    groups: dict[str, list[str]] = {}
    for base, sub in subcategory_of.items():
        groups.setdefault(sub, []).append(base)
    order: list[str] = []
    for sub in sorted(groups):
        order += sorted(groups[sub], key=lambda b: (hashlib.sha256(f"{seed}:{b}".encode()).hexdigest(), b))
    return {base: PATTERN[i % len(PATTERN)] for i, base in enumerate(order)}
