"""The offline lab's benchmarks (``mcip lab prepare`` data): the four Table 1 families on emoji.

The data root is the lab folder (``manifest.jsonl``); every adapter reads one split (default ``test``,
whose emoji never occur in training) and never loads a model:

- ``lab_i2i``: every image queries all images of the split; relevant = the same emoji (exact variant)
  drawn by another vendor; mAP over the full ranking with the query itself counted (the GPR1200 protocol).
- ``lab_i2i_r1``: the same ranking with the query excluded; Recall@1 (is the nearest other image the same
  emoji by another vendor?).
- ``lab_knn``: sub-category labels (99 such as ``animal-bird``); the ``train`` split is the index, k = 21
  weighted votes.
- ``lab_zeroshot``: sub-category names (``animal bird``) with :data:`LAB_TEMPLATES`; top-1 accuracy.
- ``lab_t2i``: each emoji's CLDR label (``grinning face``) retrieves its drawings; a hit when any vendor's
  drawing of that emoji is in the top k; Recall@1/5/10.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from mcip.data.lab_manifest import MANIFEST_NAME, SPLITS, read_lab_manifest
from mcip.errors import InputError
from mcip.eval.benchmarks.base import (
    BENCHMARKS,
    Benchmark,
    CaptionSet,
    Images,
    KNNSet,
    Option,
    RetrievalSet,
    ZeroShotSet,
)

LAB_DOWNLOAD = "Prepare the lab data with `mcip lab prepare --root DIR` and pass --data-root DIR."
LAB_TEMPLATES = (
    "{}",
    "an emoji of {}.",
    "a {} emoji.",
    "an icon of {}.",
    "a drawing of {}.",
    "a cartoon of {}.",
)
"""Prompt templates for sub-category zero-shot classification of emoji."""

LAB_BENCHMARKS = ("lab_i2i", "lab_i2i_r1", "lab_knn", "lab_zeroshot", "lab_t2i")
"""The lab's table columns, in Table 1 family order (I2I | k-NN | zero-shot | T2I)."""


def _split(value: object) -> str:
    if str(value) not in SPLITS:
        raise ValueError(f"use one of {', '.join(SPLITS)}")
    return str(value)


def subcategory_name(subcategory: str) -> str:
    """``animal-bird`` -> ``animal bird``: the words a text encoder reads."""
    return subcategory.replace("-", " ").replace("&", "and")


class _LabBenchmark(Benchmark):
    download = LAB_DOWNLOAD
    option_specs: ClassVar[dict[str, Option]] = {
        "split": Option(_split, "test", help="which split's images are the queries (train, val, test)")
    }

    def check(self, root: Path) -> None:
        if not (Path(root) / MANIFEST_NAME).is_file():
            raise self.missing(Path(root) / MANIFEST_NAME)

    def rows(self, root: Path, split: str | None = None) -> list[dict]:
        self.check(root)
        rows = read_lab_manifest(Path(root), split or self.options["split"])
        if not rows:
            raise InputError(f"The lab manifest under {root} has no images in split '{split}'.")
        return rows

    @staticmethod
    def images(root: Path, rows: list[dict], key: str, names: list[str] | None = None) -> Images:
        """The rows' image paths and the integer index of ``row[key]`` in ``names`` (sorted values)."""
        names = names if names is not None else sorted({r[key] for r in rows})
        index = {name: i for i, name in enumerate(names)}
        labels = np.fromiter((index[r[key]] for r in rows), dtype=np.int64, count=len(rows))
        return Images(tuple(Path(root) / r["path"] for r in rows), labels)


@BENCHMARKS.register("lab_i2i")
class LabRetrieval(_LabBenchmark):
    """All-vs-all emoji retrieval, query included (GPR1200 protocol): mAP. Option ``split`` (test)."""

    name = "lab_i2i"
    family = "i2i"
    table1_metric = "map"

    def load(self, root: Path) -> RetrievalSet:
        return RetrievalSet(self.images(root, self.rows(root), "label"), include_self=True, metric="map")


@BENCHMARKS.register("lab_i2i_r1")
class LabRecall(_LabBenchmark):
    """All-vs-all emoji retrieval, query excluded: Recall@1 (and @5). Option ``split`` (test)."""

    name = "lab_i2i_r1"
    family = "i2i"
    table1_metric = "recall@1"

    def load(self, root: Path) -> RetrievalSet:
        images = self.images(root, self.rows(root), "label")
        return RetrievalSet(images, include_self=False, metric="recall", ks=(1, 5))


@BENCHMARKS.register("lab_knn")
class LabKNN(_LabBenchmark):
    """Sub-category k-NN: ``train`` images vote (k = 21) for each query image. Option ``split`` (test)."""

    name = "lab_knn"
    family = "knn"
    table1_metric = "top1"

    def load(self, root: Path) -> KNNSet:
        index_rows, query_rows = self.rows(root, "train"), self.rows(root)
        names = sorted({r["subcategory"] for r in index_rows + query_rows})
        return KNNSet(
            index=self.images(root, index_rows, "subcategory", names),
            queries=self.images(root, query_rows, "subcategory", names),
            num_classes=len(names),
        )


@BENCHMARKS.register("lab_zeroshot")
class LabZeroShot(_LabBenchmark):
    """Zero-shot sub-category classification over the split's sub-categories. Option ``split`` (test)."""

    name = "lab_zeroshot"
    family = "zeroshot"
    table1_metric = "top1"

    def load(self, root: Path) -> ZeroShotSet:
        rows = self.rows(root)
        names = sorted({r["subcategory"] for r in rows})
        return ZeroShotSet(
            self.images(root, rows, "subcategory", names),
            tuple(subcategory_name(n) for n in names),
            LAB_TEMPLATES,
        )


@BENCHMARKS.register("lab_t2i")
class LabTextToImage(_LabBenchmark):
    """Each emoji's CLDR label retrieves its drawings (any vendor's counts): Recall@1/5/10, Table 1 @5."""

    name = "lab_t2i"
    family = "t2i"
    table1_metric = "recall@5"

    def load(self, root: Path) -> CaptionSet:
        rows = self.rows(root)
        images = self.images(root, rows, "label")
        first: dict[str, int] = {}
        for i, r in enumerate(rows):
            if r["captions"]:
                first.setdefault(r["label"], i)
        labels = sorted(first)
        return CaptionSet(
            images,
            tuple(rows[first[label]]["captions"][0] for label in labels),
            np.array([first[label] for label in labels], dtype=np.int64),
            match_labels=True,
        )
