"""Generic text-to-image benchmark: a manifest of images with their captions; with ``match=label`` a
caption (or a class name) retrieves every image of its class."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mcip.data.manifest import PATH_COLUMNS, read_manifest_rows
from mcip.data.records import ImageRecord, parse_captions
from mcip.errors import ConfigError, InputError
from mcip.eval.benchmarks.base import BENCHMARKS, CaptionSet, Images, Option
from mcip.eval.benchmarks.manifest import SOURCE_OPTIONS, ManifestBenchmark, split_name
from mcip.eval.benchmarks.manifest_data import (
    class_names,
    label_words,
    present_files,
    row_splits,
    select_split,
)
from mcip.eval.benchmarks.options import choice, path

MANIFEST_LAYOUT = (
    "Expected a .csv, .jsonl or .parquet manifest with a 'path' column (relative to the manifest's folder, "
    "or to root=DIR) and a 'captions' column (a list, a JSON list or '|'-separated texts); match=label "
    "also needs a 'label' column."
)


def names_option(value: Any) -> str | Path:
    text = str(value).strip()
    return text if text in ("labels", "none") else path(text)


@BENCHMARKS.register("captions_t2i")
class CaptionsRetrieval(ManifestBenchmark):
    """Text-to-image (and image-to-text) Recall@k over a user's captioned images.

    Option ``manifest`` (required): a ``.csv``, ``.jsonl`` or ``.parquet`` file with one row per image, a
    ``path`` column (aliases ``image``, ``filepath``; relative to the manifest's folder, or to ``root``)
    and a ``captions`` column (a list, a JSON list or ``|``-separated texts); ``split`` (default: every row)
    and ``encoding`` as for the manifest benchmarks. Images are sorted by path; listed images that are
    absent are skipped and counted as unreadable. The ``DATA_ROOT`` is not used.

    ``match=image`` (default): every caption queries all images and its own image is the hit; images
    without captions stay in the gallery as distractors.
    ``match=label`` (a ``label`` column): queries are per class, each class's name (``names=labels``, the
    default: the label itself, underscores read as spaces; ``names=FILE``: ``label<TAB>name`` lines;
    ``names=none``: no name query) and the distinct captions of its images; every image of the class is a
    hit (the ``lab_t2i`` protocol: a class description retrieves all photos of its class).
    Command line: ``captions_t2i:manifest=FILE`` or ``captions_t2i:manifest=FILE,match=label[,names=FILE]``.
    """

    name = "captions_t2i"
    family = "t2i"
    table1_metric = "recall@5"
    download = MANIFEST_LAYOUT
    option_specs: ClassVar[dict[str, Option]] = {
        **SOURCE_OPTIONS,
        "manifest": Option(path, required=True, help="CSV/JSONL/Parquet of image paths and their captions"),
        "match": Option(choice("image", "label"), "image", help="a caption's hits: its image, or its class"),
        "names": Option(
            names_option, "labels", help="match=label: 'labels', 'none' or a label<TAB>name file"
        ),
        "split": Option(split_name, None, help="only the rows of this split (default: every row)"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.options["match"] == "image" and self.options["names"] != "labels":
            raise ConfigError(
                "Benchmark 'captions_t2i': names= applies to match=label only (class names as queries); "
                "add match=label or leave out names=."
            )

    def check(self, root: Path) -> None:
        super().check(root)
        if isinstance(self.options["names"], Path) and not self.options["names"].is_file():
            raise self.missing(self.options["names"], "file not found")

    def load(self, root: Path) -> CaptionSet:
        self.check(root)
        return self._by_label(root) if self.options["match"] == "label" else self._by_image()

    def _by_image(self) -> CaptionSet:
        manifest = self.options["manifest"]
        rows = read_manifest_rows(manifest, self.options["encoding"])
        base = self.options["root"] or manifest.parent
        seen: set[Path] = set()
        records = []
        for i, row in enumerate(rows, start=1):
            where = f"{manifest}, row {i}"
            column = next((c for c in PATH_COLUMNS if row.get(c)), None)
            if column is None:
                raise InputError(
                    f"{where}: no image path (columns {', '.join(PATH_COLUMNS)}). {MANIFEST_LAYOUT}"
                )
            image = base / str(row[column]).strip()
            if image in seen:
                raise InputError(f"{where}: {image} is listed twice; merge its captions into one row.")
            seen.add(image)
            records.append(ImageRecord(str(image), image, "", parse_captions(row.get("captions"), where)))
        split = self.options["split"]
        records = select_split(records, row_splits(rows) if split else None, split, manifest)
        data = present_files(records, manifest, f"split '{split}'" if split else "the manifest")
        captions = [c for caps in data.captions for c in caps]
        if not captions:
            raise InputError(f"{manifest} has no captions. {MANIFEST_LAYOUT}")
        owner = np.repeat(np.arange(len(data.paths), dtype=np.int64), [len(c) for c in data.captions])
        return CaptionSet(Images(data.paths, skipped=data.skipped), tuple(captions), owner)

    def _by_label(self, root: Path) -> CaptionSet:
        (data,) = self.read(root, self.options["split"])
        classes = sorted(set(data.labels))
        names = self.options["names"]
        name_of = dict(zip(*class_names(names, data.labels), strict=True)) if isinstance(names, Path) else {}
        queries: dict[str, dict[str, None]] = {c: {} for c in classes}
        for label in classes:
            if names != "none":
                queries[label][name_of.get(label) or label_words(label) or label] = None
        for label, captions in zip(data.labels, data.captions, strict=True):
            queries[label].update(dict.fromkeys(captions))
        first: dict[str, int] = {}
        for row, label in enumerate(data.labels):
            first.setdefault(label, row)
        texts = [(text, first[label]) for label in classes for text in queries[label]]
        if not texts:
            raise InputError(
                f"{self.options['manifest']} has no captions and names=none: no queries. Give the rows "
                "captions, or use names=labels or names=FILE to query by class name."
            )
        owner = np.array([row for _, row in texts], dtype=np.int64)
        return CaptionSet(data.images(classes), tuple(t for t, _ in texts), owner, match_labels=True)
