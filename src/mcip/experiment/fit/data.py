"""The inputs of ``mcip fit``, read and checked before anything trains (``read_fit_data``): the splits, the
class names and the pool; and the manifests the run writes from them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mcip.errors import InputError
from mcip.experiment.fit.settings import FitSettings


def _existing(records, what: str):
    """(records whose image file exists, the number dropped); an empty result is an error."""
    kept = [r for r in records if Path(r.path).is_file()]
    if not kept:
        example = f" (e.g. {records[0].path})" if records else ""
        raise InputError(
            f"{what}: none of its {len(records)} images exists{example}. Relative paths start at the "
            "manifest's folder; check the path column."
        )
    return kept, len(records) - len(kept)


def _load(path: str, what: str):
    from mcip.data import load_records

    if not Path(path).exists():
        raise InputError(f"{what} {path} does not exist.")
    records = load_records(path)
    missing = [r.id for r in records if not r.label]
    if missing:
        raise InputError(
            f"{what} {path}: {len(missing)} row(s) have no label (e.g. {missing[0]!r}); mcip fit needs a "
            "label per image (the class it shows)."
        )
    return records


def _row(record, split: str | None = None, captions: Sequence[str] | None = None) -> dict:
    row = {"id": record.id, "path": str(Path(record.path).resolve()), "label": record.label}
    row["captions"] = list(record.captions if captions is None else captions)
    if split:
        row["split"] = split
    return row


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    from mcip._io import atomic_open

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@dataclass
class FitData:
    """The splits of a fit, before anything is written."""

    train: list
    val: list
    test: list
    names: dict[str, str]
    val_on_seen: bool
    val_source: str  # "--val FILE" or "held out: ..."
    test_source: str
    dropped: dict[str, int]  # split -> images whose file is missing
    knn: bool  # every test class has train images (k-NN is measurable)
    excluded_test: int = 0  # test images left out: the same content as a train or val image

    def summary(self) -> str:
        def part(name, rs):
            return f"{name} {len(rs)} images / {len({r.label for r in rs})} classes"

        line = "; ".join([part("train", self.train), part("val", self.val), part("test", self.test)])
        line += f". Validation: {self.val_source}, on {'seen' if self.val_on_seen else 'unseen'} classes"
        line += f"; report on {self.test_source}"
        dropped = {k: v for k, v in self.dropped.items() if v}
        if dropped:
            line += "; missing files skipped: " + ", ".join(f"{k} {v}" for k, v in dropped.items())
        if self.excluded_test:
            line += f"; {self.excluded_test} test image(s) left out (copies of train/val images)"
        return line


def read_fit_data(s: FitSettings) -> FitData:
    """Read and check the inputs of ``s`` (seconds, no model): every problem a run could meet in its data is
    raised here, before training starts."""
    from mcip.captions.templates import read_class_names

    train, dropped_train = _existing(_load(s.data, "--data"), "--data")
    dropped = {"train": dropped_train}
    train, val, val_on_seen, val_source = _validation(s, train, dropped)
    if len({r.label for r in train}) < 2:
        raise InputError("--data needs at least two classes to fine-tune with class labels.")
    if s.test:
        test, dropped["test"] = _existing(_load(s.test, "--test"), "--test")
        test_source = f"--test {s.test}"
    else:
        test, test_source = val, "the val images (no --test given; numbers are optimistic: val also chose)"
    labels = sorted({r.label for r in [*train, *val, *test]})
    names = (
        read_class_names(s.names, labels) if s.names else {label: label.replace("_", " ") for label in labels}
    )
    if s.pool:
        _check_pool(s.pool)
    excluded = 0
    if s.test:
        test, excluded = _without_copies(test, [*train, *val])
    knn = {r.label for r in test} <= {r.label for r in train}
    return FitData(train, val, test, names, val_on_seen, val_source, test_source, dropped, knn, excluded)


def _validation(s: FitSettings, train: list, dropped: dict) -> tuple[list, list, bool, str]:
    """(train, val, whether val is on classes seen in training, where val comes from): ``--val`` read and
    checked (its dropped rows counted in ``dropped``), else held out of each class of ``train``."""
    from mcip.data.split import split_within_classes

    if s.val:
        val, dropped["val"] = _existing(_load(s.val, "--val"), "--val")
        trained, labels = {r.label for r in train}, {r.label for r in val}
        val_on_seen = bool(trained & labels)
        new = sorted(labels - trained)
        if val_on_seen and new:
            raise InputError(
                f"--val shares classes with --data, so validation is on seen classes, but {len(new)} of its "
                f"{len(labels)} classes never appear in --data (e.g. {new[0]!r}): their images have nothing "
                "to find among the training images. Remove them from --val, or give a --val that shares "
                "no class with --data (validation on unseen classes)."
            )
        return train, val, val_on_seen, f"--val {s.val}"
    train, val = split_within_classes(train, s.val_fraction, s.seed)
    if not val:
        raise InputError(
            "--data has no class with two or more images, so nothing can be held out for validation; "
            "add images, or pass --val."
        )
    return train, val, True, f"held out {len(val)} images ({s.val_fraction:.0%} of each class with 2+ images)"


def _check_pool(pool: str) -> None:
    """A ``--pool`` that exists and holds at least one text."""
    if not Path(pool).is_file():
        raise InputError(f"--pool {pool} does not exist.")
    from mcip.captions.retrieve import load_pool

    try:
        texts, _ = load_pool(pool, None)
    except InputError:
        texts = []
    if not texts:
        raise InputError(
            f"--pool {pool} holds no text: give a file with one caption per line (or leave out "
            "--pool to use class-name templates only)."
        )


def _without_copies(test, seen) -> tuple[list, int]:
    """The test records whose file content equals no train or val image's, and how many were left out
    (a test image that is also a training or validation image measures memory, not search)."""
    from mcip.index.records import file_hash  # the content hash indexes store (shard members too)

    known = {file_hash(r.path) for r in seen}
    kept = [r for r in test if file_hash(r.path) not in known]
    if not kept:
        raise InputError(
            "Every --test image is also a --data or --val image (same file content): the report would "
            "measure nothing. Give test images that were not used for training or validation."
        )
    return kept, len(test) - len(kept)
