"""FGVC-Aircraft k-NN: the train split is the index, the test split the queries, 100 variants."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, Images, KNNSet, Option
from mcip.eval.benchmarks.files import labelled, read_lines, require, require_files
from mcip.eval.benchmarks.options import choice


@BENCHMARKS.register("fgvc_aircraft")
class FGVCAircraft(Benchmark):
    """FGVC-Aircraft (Maji et al., 2013), variant level (100 classes): index = ``train`` (3,334 images, as
    SPEC section 6 says; option ``index_split=trainval`` uses train+val, 6,667), queries = ``test`` (3,333).
    Labels are line numbers in ``variants.txt``.

    Layout (the extracted fgvc-aircraft-2013b.tar.gz): ``DATA_ROOT/fgvc-aircraft-2013b/data/{images/<id>.jpg,
    variants.txt, images_variant_train.txt, images_variant_trainval.txt, images_variant_test.txt}``; the
    split files hold ``<image id> <variant>`` lines (variants may contain spaces).
    """

    name = "fgvc_aircraft"
    family = "knn"
    table1_metric = "top1"
    download = (
        "Download https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz and "
        "extract it into DATA_ROOT, so that DATA_ROOT/fgvc-aircraft-2013b/data/images/ and "
        "DATA_ROOT/fgvc-aircraft-2013b/data/images_variant_{train,test}.txt exist."
    )
    option_specs: ClassVar[dict[str, Option]] = {
        "index_split": Option(
            choice("train", "trainval"), "train", help="the split that forms the k-NN index"
        )
    }

    def _data(self, root: Path) -> Path:
        return Path(root) / "fgvc-aircraft-2013b" / "data"

    def check(self, root: Path) -> None:
        data = self._data(root)
        require(data / "images", self.download)
        for split in (self.options["index_split"], "test"):
            require(data / f"images_variant_{split}.txt", self.download, folder=False)
        require(data / "variants.txt", self.download, folder=False)

    def _split(self, data: Path, split: str, variants: dict[str, int]) -> Images:
        listing = data / f"images_variant_{split}.txt"
        rows = []
        for line in read_lines(listing):
            image_id, _, variant = line.partition(" ")
            if variant not in variants:
                raise InputError(f"{listing}: the line '{line}' names a variant missing from variants.txt.")
            rows.append((image_id, variants[variant]))
        rows.sort()
        paths = [data / "images" / f"{image_id}.jpg" for image_id, _ in rows]
        require_files(paths, self.download, listing)
        return labelled(paths, (label for _, label in rows))

    def load(self, root: Path) -> KNNSet:
        self.check(root)
        data = self._data(root)
        variants = {name: i for i, name in enumerate(read_lines(data / "variants.txt"))}
        index = self._split(data, self.options["index_split"], variants)
        return KNNSet(index=index, queries=self._split(data, "test", variants), num_classes=len(variants))
