"""Generic benchmarks on a user's manifest (CSV / JSONL / Parquet, the training format): image-to-image
retrieval, k-NN between two splits, and zero-shot classification. The manifest's layout and how absent
files are handled are in :mod:`mcip.eval.benchmarks.manifest_data`; the protocols are those of the folder
benchmarks, so a manifest listing the images of a folder gives the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from mcip.data.textfile import check_encoding
from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, KNNSet, Option, RetrievalSet, ZeroShotSet
from mcip.eval.benchmarks.classnames import read_templates, templates_option
from mcip.eval.benchmarks.files import class_ids, require
from mcip.eval.benchmarks.manifest_data import (
    MANIFEST_LAYOUT,
    LabelledImages,
    class_names,
    listed,
    read_labelled,
    require_manifest,
)
from mcip.eval.benchmarks.options import boolean, path
from mcip.eval.benchmarks.zeroshot_imagenet import openai_templates


def split_name(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("expected a split name such as train or test")
    return text


SOURCE_OPTIONS: dict[str, Option] = {
    "manifest": Option(path, required=True, help="CSV/JSONL/Parquet with path and label columns"),
    "root": Option(path, None, help="folder that relative image paths start from (default: the manifest's)"),
    "encoding": Option(
        check_encoding, None, help="text encoding of a CSV/JSONL manifest (default: detected)"
    ),
}
"""Options every manifest benchmark takes."""


class ManifestBenchmark(Benchmark):
    """Reads ``manifest`` (relative image paths start at ``root``, default the manifest's folder)."""

    download = MANIFEST_LAYOUT
    option_specs: ClassVar[dict[str, Option]] = SOURCE_OPTIONS

    def check(self, root: Path) -> None:
        require_manifest(self.options["manifest"], self.download)
        if self.options["root"] is not None:
            require(self.options["root"], self.download)

    def read(self, root: Path, *splits: str | None) -> list[LabelledImages]:
        self.check(root)
        return read_labelled(self.options["manifest"], splits, self.options["root"], self.options["encoding"])


@BENCHMARKS.register("manifest_i2i")
class ManifestRetrieval(ManifestBenchmark):
    """All-vs-all retrieval over the images of a manifest (relevant: the same ``label``); mAP over the
    full ranking, as ``folder_i2i``.

    Options: ``manifest`` (required), ``root``, ``encoding``; ``split`` (default: every row) the rows of one
    split; ``include_self`` (default true: the query counts as a hit); ``gallery`` (a split name): its
    images join the database but never query, the query itself is not a hit, and the table's metric is the
    mean AP over the ``split`` queries (``map/queries``): validation on seen classes, where a class may have
    a single held-out image, is the held-out images searching the training images as ``mcip fit`` chooses
    on it. The ``DATA_ROOT`` is not used.
    Command line: ``manifest_i2i:manifest=FILE[,split=test][,root=DIR][,gallery=train]``.
    """

    name = "manifest_i2i"
    family = "i2i"
    table1_metric = "map"
    option_specs: ClassVar[dict[str, Option]] = {
        **SOURCE_OPTIONS,
        "split": Option(split_name, None, help="only the rows of this split (default: every row)"),
        "include_self": Option(boolean, True, help="count the query itself as a hit"),
        "gallery": Option(split_name, None, help="a split whose images are searched but never query"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.options.get("gallery"):
            self.table1_metric = "map/queries"

    def load(self, root: Path) -> RetrievalSet:
        gallery = self.options.get("gallery")
        if not gallery:
            (data,) = self.read(root, self.options["split"])
            classes, _ = class_ids(data.labels)
            return RetrievalSet(data.images(classes), include_self=self.options["include_self"], metric="map")
        queries, base = self.read(root, self.options["split"], gallery)
        both = LabelledImages(
            queries.paths + base.paths, queries.labels + base.labels, queries.captions + base.captions
        )
        classes, _ = class_ids(both.labels)
        return RetrievalSet(
            both.images(classes),
            include_self=False,
            metric="map",
            subsets=(("queries", 0, len(queries.labels)),),
        )


@BENCHMARKS.register("manifest_knn")
class ManifestKNN(ManifestBenchmark):
    """k-NN classification within one manifest: the images of split ``index`` vote for each image of split
    ``query`` (k = 21, as ``folder_knn``).

    Options: ``manifest`` (required, with a ``split`` column), ``root``, ``encoding``; ``index`` (default
    ``train``) and ``query`` (default ``test``) split names. Labels index the sorted labels of the index
    split; a query label absent from the index fails. The ``DATA_ROOT`` is not used.
    Command line: ``manifest_knn:manifest=FILE[,index=train,query=test]``.
    """

    name = "manifest_knn"
    family = "knn"
    table1_metric = "top1"
    option_specs: ClassVar[dict[str, Option]] = {
        **SOURCE_OPTIONS,
        "index": Option(split_name, "train", help="the split whose images vote (the labelled index)"),
        "query": Option(split_name, "test", help="the split whose images are classified"),
    }

    def load(self, root: Path) -> KNNSet:
        index, queries = self.read(root, self.options["index"], self.options["query"])
        classes, _ = class_ids(index.labels)
        unknown = sorted(set(queries.labels) - set(classes))
        if unknown:
            raise InputError(
                f"{self.options['manifest']}: the labels {listed(unknown)} of split '{self.options['query']}' "
                f"have no image in split '{self.options['index']}'; k-NN can never predict them. Add "
                "images of them to the index split or remove them from the query split."
            )
        return KNNSet(index=index.images(classes), queries=queries.images(classes), num_classes=len(classes))


@BENCHMARKS.register("manifest_zeroshot")
class ManifestZeroShot(ManifestBenchmark):
    """Zero-shot top-1 over a manifest's labels, as ``classnames_zeroshot``.

    Options: ``manifest`` (required), ``root``, ``encoding``; ``split`` (default: every row); ``names`` a
    text file of ``label<TAB>name`` lines (file order = class order; classes without images allowed; every
    label needs a line), default: the labels themselves (underscores read as spaces); ``templates`` a file
    of templates with ``{}`` or ``default`` (OpenAI's 80). The ``DATA_ROOT`` is not used.
    Command line: ``manifest_zeroshot:manifest=FILE[,split=test][,names=FILE][,templates=FILE]``.
    """

    name = "manifest_zeroshot"
    family = "zeroshot"
    table1_metric = "top1"
    option_specs: ClassVar[dict[str, Option]] = {
        **SOURCE_OPTIONS,
        "split": Option(split_name, None, help="only the rows of this split (default: every row)"),
        "names": Option(path, None, help="'label<TAB>name' per class (default: the labels themselves)"),
        "templates": Option(templates_option, "default", help="file of templates with {}, or 'default'"),
    }

    def check(self, root: Path) -> None:
        super().check(root)
        for key in ("names", "templates"):
            if self.options[key] not in (None, "default"):
                require(self.options[key], self.download, folder=False)

    def load(self, root: Path) -> ZeroShotSet:
        (data,) = self.read(root, self.options["split"])
        classes, names = class_names(self.options["names"], data.labels)
        templates = self.options["templates"]
        templates = openai_templates() if templates == "default" else read_templates(templates)
        return ZeroShotSet(data.images(classes), tuple(names), templates)
