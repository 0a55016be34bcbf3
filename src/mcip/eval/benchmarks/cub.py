"""CUB-200-2011, classes 101-200: each image queries all others (itself excluded), Recall@k."""

from __future__ import annotations

from pathlib import Path

from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, RetrievalSet
from mcip.eval.benchmarks.files import labelled, read_lines, require, require_files

FIRST_TEST_CLASS = 101  # the metric-learning split: classes 1-100 train, 101-200 test


def _table(path: Path) -> dict[int, str]:
    """``id value`` lines -> {id: value}."""
    rows = {}
    for line in read_lines(path):
        key, _, value = line.partition(" ")
        if not key.isdigit() or not value:
            raise InputError(f"{path}: cannot read the line '{line}' (expected '<id> <value>').")
        rows[int(key)] = value.strip()
    return rows


@BENCHMARKS.register("cub")
class CUB(Benchmark):
    """CUB-200-2011 (Wah et al., 2011), test classes 101-200 (5,924 images): each image queries all others,
    itself excluded; Recall@1/2/4/8. Labels are ``class_id - 101`` (0..99).

    Layout (the extracted CUB_200_2011.tgz): ``DATA_ROOT/CUB_200_2011/{images.txt, image_class_labels.txt,
    images/<class>/<image>.jpg}``; ``images.txt`` holds ``<image id> <path under images/>``,
    ``image_class_labels.txt`` holds ``<image id> <class id 1..200>``.
    """

    name = "cub"
    family = "i2i"
    table1_metric = "recall@1"
    download = (
        "Download CUB_200_2011.tgz from https://data.caltech.edu/records/65de6-vp158 and extract it into "
        "DATA_ROOT, so that DATA_ROOT/CUB_200_2011/images.txt, image_class_labels.txt and images/ exist."
    )

    def check(self, root: Path) -> None:
        folder = Path(root) / "CUB_200_2011"
        require(folder / "images", self.download)
        for name in ("images.txt", "image_class_labels.txt"):
            require(folder / name, self.download, folder=False)

    def load(self, root: Path) -> RetrievalSet:
        self.check(root)
        folder = Path(root) / "CUB_200_2011"
        files = _table(folder / "images.txt")
        classes = _table(folder / "image_class_labels.txt")
        rows = []
        for image_id, rel in files.items():
            if image_id not in classes:
                raise InputError(
                    f"{folder / 'image_class_labels.txt'} has no class for image {image_id} ({rel})."
                )
            class_id = int(classes[image_id])
            if class_id >= FIRST_TEST_CLASS:
                rows.append((rel, class_id - FIRST_TEST_CLASS))
        rows.sort()
        paths = [folder / "images" / rel for rel, _ in rows]
        require_files(paths, self.download, folder / "images.txt")
        return RetrievalSet(
            images=labelled(paths, (c for _, c in rows)), include_self=False, metric="recall", ks=(1, 2, 4, 8)
        )
