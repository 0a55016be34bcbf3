"""Generic benchmarks on a user's image folders (class = sub-folder): image-to-image retrieval and k-NN."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, KNNSet, Option, RetrievalSet
from mcip.eval.benchmarks.files import class_folder_images, class_ids, labelled, require
from mcip.eval.benchmarks.options import boolean, path

FOLDER_LAYOUT = "Expected FOLDER/<class>/<image> (images at any depth below their class folder)."


@BENCHMARKS.register("folder_i2i")
class FolderRetrieval(Benchmark):
    """All-vs-all retrieval over the images of one folder, class = first sub-folder; mAP over the full ranking.

    Options: ``path`` (required) the folder, ``FOLDER/<class>/.../<image>``; ``include_self`` (default true:
    the query counts as a hit, as in GPR1200 and INSTRE; false excludes it). The ``DATA_ROOT`` is not used.
    Command line: ``folder_i2i:path=DIR`` or ``folder_i2i:path=DIR,include_self=false``.
    """

    name = "folder_i2i"
    family = "i2i"
    table1_metric = "map"
    download = FOLDER_LAYOUT
    option_specs: ClassVar[dict[str, Option]] = {
        "path": Option(path, required=True, help="folder of class sub-folders of images"),
        "include_self": Option(boolean, True, help="count the query itself as a hit"),
    }

    def check(self, root: Path) -> None:
        require(self.options["path"], self.download)

    def load(self, root: Path) -> RetrievalSet:
        paths, classes = class_folder_images(self.options["path"], self.download)
        _, labels = class_ids(classes)
        return RetrievalSet(labelled(paths, labels), include_self=self.options["include_self"], metric="map")


@BENCHMARKS.register("folder_knn")
class FolderKNN(Benchmark):
    """k-NN classification: the images of ``index`` vote for each image of ``queries``.

    Options (both required): ``index`` and ``queries``, folders of ``<class>/<image>``. Labels index the
    sorted class folders of ``index``; a query class absent from the index fails. The ``DATA_ROOT`` is not
    used. Command line: ``folder_knn:index=DIR,queries=DIR``.
    """

    name = "folder_knn"
    family = "knn"
    table1_metric = "top1"
    download = FOLDER_LAYOUT
    option_specs: ClassVar[dict[str, Option]] = {
        "index": Option(path, required=True, help="folder of class sub-folders: the labelled index"),
        "queries": Option(path, required=True, help="folder of class sub-folders: the images to classify"),
    }

    def check(self, root: Path) -> None:
        require(self.options["index"], self.download)
        require(self.options["queries"], self.download)

    def load(self, root: Path) -> KNNSet:
        index_paths, index_classes = class_folder_images(self.options["index"], self.download)
        query_paths, query_classes = class_folder_images(self.options["queries"], self.download)
        classes, index_labels = class_ids(index_classes)
        label_of = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(query_classes) - set(label_of))
        if unknown:
            raise InputError(
                f"{self.options['queries']}: the query classes {', '.join(unknown[:5])}"
                f"{' ...' if len(unknown) > 5 else ''} have no images in the index {self.options['index']}; "
                "k-NN can never predict them. Add them to the index or remove them from the queries."
            )
        return KNNSet(
            index=labelled(index_paths, index_labels),
            queries=labelled(query_paths, (label_of[c] for c in query_classes)),
            num_classes=len(classes),
        )
