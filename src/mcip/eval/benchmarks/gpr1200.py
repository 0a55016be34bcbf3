"""GPR1200: 12,000 images of 1,200 classes from six domains, all-vs-all mAP with the query included."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, RetrievalSet
from mcip.eval.benchmarks.files import labelled, list_images, require

SUBSETS = ("landmarks", "inat", "sketch", "instre", "sop", "faces")
FULL_SIZE = 12_000


def gpr1200_subsets(labels: np.ndarray) -> tuple[tuple[str, int, int], ...]:
    """The six subsets as (name, start, stop) query-row slices, in file order.

    The full dataset: six consecutive 2,000-image slices, as the official evaluation. A smaller copy gets
    six equal slices when it is proportional (a class count divisible by 6, every class the same size),
    and no subsets otherwise.
    """
    n = len(labels)
    counts = np.unique(labels, return_counts=True)[1]
    proportional = len(counts) % 6 == 0 and bool((counts == counts[0]).all())
    if n != FULL_SIZE and not proportional:
        return ()
    step = n // 6
    return tuple((name, i * step, (i + 1) * step) for i, name in enumerate(SUBSETS))


@BENCHMARKS.register("gpr1200")
class GPR1200(Benchmark):
    """GPR1200 (Schall et al., 2021): every image queries all 12,000, itself included; mAP and six subset mAPs.

    Layout: ``DATA_ROOT/gpr1200/images/{class}_{name}.jpg`` (12,000 files in one folder). The label is the
    integer class id before the first ``_``. Files are ordered by class id, then name (the official order), so
    that the subsets landmarks, iNat, sketch, INSTRE, SOP, faces are consecutive 2,000-image slices.
    """

    name = "gpr1200"
    family = "i2i"
    table1_metric = "map"
    download = (
        "Download GPR1200.zip from https://visual-computing.com/files/GPR1200/GPR1200.zip "
        "(see https://github.com/Visual-Computing/GPR1200) and unzip it into DATA_ROOT/gpr1200/, so that the "
        "12,000 images lie in DATA_ROOT/gpr1200/images/{class}_{name}.jpg."
    )

    def check(self, root: Path) -> None:
        require(Path(root) / "gpr1200" / "images", self.download)

    def load(self, root: Path) -> RetrievalSet:
        self.check(root)
        folder = Path(root) / "gpr1200" / "images"
        keyed = []
        for path in list_images(folder, recursive=False):
            head = path.name.split("_", 1)[0]
            if not head.isdigit():
                raise InputError(
                    f"{path}: GPR1200 file names are '{{class}}_{{name}}.jpg' with an integer class; "
                    f"remove the file or re-extract GPR1200.zip into {folder.parent}."
                )
            keyed.append((int(head), path.name, path))
        if not keyed:
            raise self.missing(folder, "contains no images")
        keyed.sort()
        images = labelled((p for _, _, p in keyed), (c for c, _, _ in keyed))
        return RetrievalSet(
            images=images, include_self=True, metric="map", subsets=gpr1200_subsets(images.labels)
        )
