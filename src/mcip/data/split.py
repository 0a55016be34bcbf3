"""Validation split held out by class: checkpoint selection measures retrieval on unseen classes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mcip.data.records import ImageRecord
from mcip.errors import ConfigError, InputError


def _class_rank(label: str, seed: int) -> str:
    """A seeded pseudo-random sort key per class, the same whatever the other classes or their order."""
    return hashlib.sha256(f"{seed}\x00{label}".encode()).hexdigest()


def split_by_class(
    records: Sequence[ImageRecord], val_fraction: float = 0.05, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, val)``: whole classes go to val, about ``val_fraction`` of the classes (at least one).

    The held-out classes depend only on the set of labels and ``seed`` (not on the record order); each
    part keeps the input order. ``val_fraction=0`` returns every record as train and an empty val.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise ConfigError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}.")
    if not 0 <= val_fraction < 1:
        raise ConfigError(
            f"val_fraction must be in [0, 1), got {val_fraction}; 0.05 holds out 5% of classes."
        )
    if not records:
        raise InputError("No records to split; check the training data source.")
    if val_fraction == 0:
        return list(records), []
    classes = sorted({r.label for r in records})
    n_val = max(1, round(val_fraction * len(classes)))
    if len(classes) < 2:
        raise ConfigError(
            f"A validation split by class needs at least 2 classes, found {len(classes)}; "
            "set val_fraction=0 to train without a validation split."
        )
    if n_val >= len(classes):
        raise ConfigError(
            f"val_fraction={val_fraction} would move all {len(classes)} classes to validation and leave "
            f"none for training; use a val_fraction below {(len(classes) - 0.5) / len(classes):.3f}."
        )
    val_classes = set(sorted(classes, key=lambda c: _class_rank(c, seed))[:n_val])
    train = [r for r in records if r.label not in val_classes]
    val = [r for r in records if r.label in val_classes]
    return train, val


def split_within_classes(
    records: Sequence[ImageRecord], val_fraction: float = 0.05, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, val)`` for validation on SEEN classes: about ``val_fraction`` of each class's images
    (at least one) go to val, the rest stay in train, so every val class also trains.

    A class with a single image stays whole in train (it could not be both trained and validated). The
    held-out images depend only on each record's id and ``seed``; each part keeps the input order.
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, int | float)
        or not 0 <= val_fraction < 1
    ):
        raise ConfigError(
            f"val_fraction must be a number in [0, 1), got {val_fraction!r}; 0.1 holds out 10% of each "
            "class's images."
        )
    if not records:
        raise InputError("No records to split; check the training data source.")
    if val_fraction == 0:
        return list(records), []
    by_class: dict[str, list[ImageRecord]] = {}
    for r in records:
        by_class.setdefault(r.label, []).append(r)
    held: set[str] = set()
    for members in by_class.values():
        if len(members) < 2:
            continue
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        ranked = sorted(members, key=lambda r: _class_rank(r.id, seed))
        held.update(r.id for r in ranked[:n_val])
    if not held:
        raise ConfigError(
            "A seen-class validation split needs classes with at least 2 images; every class here has one. "
            "Give data.val explicitly or use data.val_mode=unseen_classes."
        )
    return [r for r in records if r.id not in held], [r for r in records if r.id in held]
