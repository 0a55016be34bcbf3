"""A user's labelled manifest as evaluation data: the rows of one split, sorted by path, absent files
skipped and counted, class names from a ``label<TAB>name`` file or the labels themselves.

The manifest is read by :func:`mcip.data.manifest.read_manifest` (``.csv``, ``.jsonl``, ``.parquet``;
columns ``path``, ``label``, optional ``captions``, ``id``), so training and evaluation read one file the
same way. An optional ``split`` column (``train``, ``test``, any name) selects rows; rows without a value
belong to no split. Nothing is decoded here: a listed file that does not exist is left out (counted in
``skipped`` and warned about once); one that exists but does not decode becomes a zero embedding in the
runner, counted as unreadable.
"""

from __future__ import annotations

import contextvars
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcip.data.images import image_exists
from mcip.data.manifest import is_shard_source, load_records, read_manifest, read_manifest_rows
from mcip.data.records import ImageRecord
from mcip.errors import InputError
from mcip.eval.benchmarks.base import Images, dataset_missing
from mcip.eval.benchmarks.files import read_lines

MANIFEST_LAYOUT = (
    "Expected manifest=FILE: a .csv, .jsonl or .parquet file with one row per image and the columns 'path' "
    "(relative to the manifest's folder, or to root=DIR) and 'label', optionally 'captions' and 'split' "
    "(e.g. train / test)."
)
SPLIT_COLUMN = "split"
MAX_LISTED = 5


@dataclass(frozen=True)
class LabelledImages:
    """The images of one split, sorted by path, with their class labels (text) and captions."""

    paths: tuple[Path, ...]
    labels: tuple[str, ...]
    captions: tuple[tuple[str, ...], ...]
    skipped: int = 0  # rows of the split whose file is absent (left out)

    def images(self, classes: Sequence[str]) -> Images:
        """:class:`Images` labelled with each label's index in ``classes``."""
        index = {c: i for i, c in enumerate(classes)}
        labels = np.fromiter((index[label] for label in self.labels), dtype=np.int64, count=len(self.labels))
        return Images(self.paths, labels, skipped=self.skipped)


def _is_shards(manifest: Path) -> bool:
    """A shard pattern (``shards/*.tar``, ``s-{0000..0009}.tar``) rather than a manifest file."""
    return not manifest.is_file() and is_shard_source(manifest)


def require_manifest(manifest: Path, download: str = MANIFEST_LAYOUT) -> None:
    """Fail with the expected layout unless ``manifest`` is a file (a folder gets the folder benchmarks) or
    webdataset shards (checked when read)."""
    if _is_shards(manifest):
        return
    if manifest.is_dir():
        raise InputError(
            f"{manifest} is a folder; the manifest_* benchmarks read a manifest file. For a folder of "
            "class sub-folders use folder_i2i:path=DIR, folder_knn:index=DIR,queries=DIR or "
            f"classnames_zeroshot:images=DIR,classnames=FILE. {download}"
        )
    if not manifest.is_file():
        raise dataset_missing(manifest, download, "file not found")


def listed(values: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``'a', 'b', 'c' (and 4 more)``: the first few of ``values``, quoted."""
    more = f" (and {len(values) - limit} more)" if len(values) > limit else ""
    return ", ".join(repr(v) for v in values[:limit]) + more


def row_splits(rows: Sequence[dict]) -> list[str] | None:
    """Each row's split (``""`` when empty), or None when the manifest has no ``split`` column."""
    if not any(SPLIT_COLUMN in row for row in rows):
        return None
    return ["" if row.get(SPLIT_COLUMN) is None else str(row[SPLIT_COLUMN]).strip() for row in rows]


def select_split(items: Sequence, splits: list[str] | None, split: str | None, manifest: Path) -> list:
    """The items whose split is ``split`` (all of them when ``split`` is None); a split that no row has
    fails with the splits present."""
    if split is None:
        return list(items)
    if splits is None:
        raise InputError(
            f"{manifest} has no '{SPLIT_COLUMN}' column, so it has no split '{split}'. Add a '{SPLIT_COLUMN}' "
            "column (e.g. train / test per row), or leave out the split options to use every row."
        )
    chosen = [item for item, s in zip(items, splits, strict=True) if s == split]
    if not chosen:
        present = sorted({s for s in splits if s})
        raise InputError(
            f"{manifest} has no rows in split '{split}'; the splits present are "
            f"{listed(present) if present else 'none (the split column is empty)'}. Use one of them."
        )
    return chosen


def present_files(records: Sequence[ImageRecord], manifest: Path, what: str) -> LabelledImages:
    """The records whose file (or shard member ``SHARD.tar#KEY``) exists, sorted by path; absent ones are
    counted and warned about once."""
    exists = [image_exists(r.path) for r in records]
    kept = sorted((r for r, ok in zip(records, exists, strict=True) if ok), key=lambda r: r.path)
    absent = [str(r.path) for r, ok in zip(records, exists, strict=True) if not ok]
    if absent:
        warnings.warn(
            f"{manifest}: {len(absent)} of the {len(records)} images of {what} are not found and are "
            f"skipped (counted as unreadable), e.g. {absent[0]}. Fix the paths (relative paths start at "
            "the manifest's folder, or at root=DIR) or remove the rows.",
            stacklevel=3,
        )
    if not kept:
        raise dataset_missing(Path(absent[0]), MANIFEST_LAYOUT, f"none of the images of {what} exist")
    return LabelledImages(
        tuple(r.path for r in kept),
        tuple(r.label for r in kept),
        tuple(r.captions for r in kept),
        skipped=len(absent),
    )


_READ: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mcip_manifests_read", default=None)


@contextmanager
def manifests_read_once() -> Iterator[None]:
    """Within the block each manifest is parsed once: the benchmarks of one evaluation (``mcip fit``'s
    four read the same catalogue) share its records; which files exist is still checked per benchmark."""
    token = _READ.set({} if _READ.get() is None else _READ.get())
    try:
        yield
    finally:
        _READ.reset(token)


def _parsed(manifest: Path, root, encoding: str | None, with_splits: bool) -> tuple[list, list | None]:
    """The manifest's records and (``with_splits``) each row's split, parsed once per
    :func:`manifests_read_once` block."""
    memo, key = _READ.get(), (str(manifest), str(root), encoding)
    if memo is not None and key in memo:
        records, per_row = memo[key]
        return records, per_row if with_splits else None
    records = read_manifest(manifest, root, encoding)
    per_row = row_splits(read_manifest_rows(manifest, encoding)) if with_splits or memo is not None else None
    if memo is not None:
        memo[key] = (records, per_row)
    return records, per_row if with_splits else None


def read_labelled(
    manifest: Path,
    splits: Sequence[str | None],
    root: str | os.PathLike | None = None,
    encoding: str | None = None,
) -> list[LabelledImages]:
    """One :class:`LabelledImages` per entry of ``splits`` (None: every row), reading the manifest once.
    ``manifest`` may also be webdataset shards (``shards/*.tar``): every sample, no split column."""
    require_manifest(manifest)
    if _is_shards(manifest):
        records, per_row = load_records(manifest), None
    else:
        records, per_row = _parsed(manifest, root, encoding, any(s is not None for s in splits))
    out = []
    for split in splits:
        chosen = select_split(records, per_row, split, manifest)
        out.append(present_files(chosen, manifest, f"split '{split}'" if split else "the manifest"))
    return out


def label_words(label: str) -> str:
    """A label as words a text encoder reads: ``red_fox`` -> ``red fox`` (as ``mcip captions template``)."""
    return re.sub(r"\s+", " ", label.replace("_", " ")).strip()


def class_names(names_file: Path | None, labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(class labels, class names)`` in class order.

    Without ``names_file``: the sorted ``labels``, named by themselves (underscores read as spaces). With
    it: one ``label<TAB>name`` line per class, in file order (classes without images are allowed: images
    are classified over all of them); every label of ``labels`` needs a line.
    """
    present = sorted(set(labels))
    if names_file is None:
        return present, [label_words(label) or label for label in present]
    pairs: dict[str, str] = {}
    for n, line in enumerate(read_lines(names_file), start=1):
        label, tab, name = line.partition("\t")
        if not tab or not label.strip() or not name.strip():
            raise InputError(f"{names_file}, line {n}: expected 'label<TAB>name', got {line!r}.")
        if label.strip() in pairs:
            raise InputError(f"{names_file}, line {n}: the label {label.strip()!r} has a second line.")
        pairs[label.strip()] = name.strip()
    missing = [label for label in present if label not in pairs]
    if missing:
        raise InputError(
            f"{names_file} names no class for {len(missing)} of the {len(present)} labels of the manifest: "
            f"{listed(missing)}. Add one 'label<TAB>name' line for each, or leave out names= to use the "
            "labels themselves."
        )
    return list(pairs), list(pairs.values())
