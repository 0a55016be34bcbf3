"""INSTRE: instance retrieval, all-vs-all mAP with the query included (the GPR1200 protocol)."""

from __future__ import annotations

from pathlib import Path

from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, Images, RetrievalSet
from mcip.eval.benchmarks.files import class_ids, list_images, require


@BENCHMARKS.register("instre")
class INSTRE(Benchmark):
    """INSTRE (Wang & Jiang, 2015): every image queries all, itself included; label = parent folder.

    Layout: ``DATA_ROOT/instre/INSTRE-S1/<object>/*.jpg``, ``.../INSTRE-S2/<object>/*.jpg``,
    ``.../INSTRE-M/<pair>/*.jpg`` (the contents of INSTRE_release). Every image under ``DATA_ROOT/instre``
    counts; its class is its parent folder's path relative to ``DATA_ROOT/instre`` (e.g.
    ``INSTRE-S1/01a_canada_book``). Non-image files (bounding-box ``.txt``, ``gnd_instre.mat``) are ignored.
    """

    name = "instre"
    family = "i2i"
    table1_metric = "map"
    download = (
        "Download INSTRE_release.rar from http://123.57.42.89/Dataset_ict/INSTRE/INSTRE_release.rar and extract "
        "it so that DATA_ROOT/instre/INSTRE-S1, DATA_ROOT/instre/INSTRE-S2 and DATA_ROOT/instre/INSTRE-M hold "
        "the class folders of images."
    )

    def check(self, root: Path) -> None:
        require(Path(root) / "instre", self.download)

    def load(self, root: Path) -> RetrievalSet:
        self.check(root)
        folder = Path(root) / "instre"
        paths = list_images(folder)
        if not paths:
            raise self.missing(folder, "contains no images")
        parents = [p.parent.relative_to(folder).as_posix() for p in paths]
        if "." in parents:
            loose = paths[parents.index(".")]
            raise InputError(
                f"{loose}: an image directly in {folder} has no class; INSTRE images lie in class folders "
                f"({folder}/INSTRE-S1/<object>/...). Move or remove it."
            )
        _, labels = class_ids(parents)
        return RetrievalSet(images=Images(tuple(paths), labels), include_self=True, metric="map")
