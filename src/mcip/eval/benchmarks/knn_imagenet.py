"""k-NN classification with the ImageNet train set as the index; queries from ImageNet val and its variants."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from mcip.eval.benchmarks import imagenet
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, KNNSet, Option
from mcip.eval.benchmarks.options import integer, positive_int


class _KNNImageNet(Benchmark):
    """Index: ``DATA_ROOT/imagenet/train/<wnid>/*.JPEG`` (1.28M images, all of them by default); queries:
    the variant's images. Labels index the 1000 sorted ImageNet-1k wnids, and every query is classified
    over all 1000 classes (also for ImageNet-A / -R, whose 200 wnids map into that space).

    Options: ``index_per_class`` (default: all) keeps a deterministic random sample of that many train
    images per class, for speed; ``seed`` (default 0) picks the sample.
    """

    family = "knn"
    table1_metric = "top1"
    download = imagenet.IMAGENET_DOWNLOAD
    queries: ClassVar[imagenet.Variant]
    option_specs: ClassVar[dict[str, Option]] = {
        "index_per_class": Option(
            positive_int, None, help="train images per class in the index; default all"
        ),
        "seed": Option(integer, 0, help="seed of the index_per_class sample"),
    }

    def check(self, root: Path) -> None:
        imagenet.TRAIN.check(root)
        self.queries.check(root)

    def load(self, root: Path) -> KNNSet:
        self.check(root)
        index = imagenet.TRAIN.load(root, self.options["index_per_class"], self.options["seed"])
        return KNNSet(index=index, queries=self.queries.load(root), num_classes=1000)


@BENCHMARKS.register("knn_in_val")
class KNNImageNetVal(_KNNImageNet):
    """k-NN, queries: ImageNet val, ``DATA_ROOT/imagenet/val/<wnid>/*.JPEG`` (sorted into wnid folders)."""

    name = "knn_in_val"
    queries = imagenet.VAL


@BENCHMARKS.register("knn_in_sketch")
class KNNImageNetSketch(_KNNImageNet):
    """k-NN, queries: ImageNet-Sketch, ``DATA_ROOT/imagenet-sketch/<wnid>/*.JPEG``."""

    name = "knn_in_sketch"
    queries = imagenet.SKETCH


@BENCHMARKS.register("knn_in_a")
class KNNImageNetA(_KNNImageNet):
    """k-NN, queries: ImageNet-A, ``DATA_ROOT/imagenet-a/<wnid>/*.jpg`` (200 wnids, predicted over 1000)."""

    name = "knn_in_a"
    queries = imagenet.ADVERSARIAL


@BENCHMARKS.register("knn_in_r")
class KNNImageNetR(_KNNImageNet):
    """k-NN, queries: ImageNet-R, ``DATA_ROOT/imagenet-r/<wnid>/*.jpg`` (200 wnids, predicted over 1000)."""

    name = "knn_in_r"
    queries = imagenet.RENDITION


@BENCHMARKS.register("knn_in_v2")
class KNNImageNetV2(_KNNImageNet):
    """k-NN, queries: ImageNetV2 matched-frequency, ``DATA_ROOT/imagenetv2/<class index 0..999>/*.jpeg``."""

    name = "knn_in_v2"
    queries = imagenet.V2
