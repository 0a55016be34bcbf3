"""Generic text-to-image benchmark: a manifest of images with their captions."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from mcip.data.manifest import PATH_COLUMNS, parse_captions
from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, CaptionSet, Images, Option
from mcip.eval.benchmarks.files import require, require_files
from mcip.eval.benchmarks.options import path

MANIFEST_LAYOUT = (
    "Expected a .csv or .jsonl manifest with a 'path' column (relative to the manifest's folder) and a "
    "'captions' column (a list, a JSON list or '|'-separated texts)."
)


def _rows(manifest: Path) -> list[dict]:
    if manifest.suffix.lower() == ".csv":
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    if manifest.suffix.lower() == ".jsonl":
        with open(manifest, encoding="utf-8") as f:
            try:
                return [json.loads(line) for line in f if line.strip()]
            except json.JSONDecodeError as exc:
                raise InputError(f"{manifest}: a line is not valid JSON ({exc}).") from exc
    raise InputError(f"{manifest}: unknown manifest type '{manifest.suffix}'. {MANIFEST_LAYOUT}")


@BENCHMARKS.register("captions_t2i")
class CaptionsRetrieval(Benchmark):
    """Text-to-image (and image-to-text) Recall@k over a user's captioned images.

    Option ``manifest`` (required): a ``.csv`` or ``.jsonl`` file with one row per image, a ``path`` column
    (aliases ``image``, ``filepath``; relative to the manifest's folder) and a ``captions`` column (a list,
    a JSON list or ``|``-separated texts). Every caption queries all images; images without captions stay
    in the gallery as distractors. Images are sorted by path. The ``DATA_ROOT`` is not used.
    Command line: ``captions_t2i:manifest=FILE``.
    """

    name = "captions_t2i"
    family = "t2i"
    table1_metric = "recall@5"
    download = MANIFEST_LAYOUT
    option_specs: ClassVar[dict[str, Option]] = {
        "manifest": Option(path, required=True, help="CSV/JSONL of image paths and their captions"),
    }

    def check(self, root: Path) -> None:
        require(self.options["manifest"], self.download, folder=False)

    def load(self, root: Path) -> CaptionSet:
        self.check(root)
        manifest = self.options["manifest"]
        by_path: dict[Path, tuple[str, ...]] = {}
        for i, row in enumerate(_rows(manifest), start=1):
            where = f"{manifest}, row {i}"
            column = next((c for c in PATH_COLUMNS if row.get(c)), None) if isinstance(row, dict) else None
            if column is None:
                raise InputError(
                    f"{where}: no image path (columns {', '.join(PATH_COLUMNS)}). {MANIFEST_LAYOUT}"
                )
            image = manifest.parent / str(row[column]).strip()
            if image in by_path:
                raise InputError(f"{where}: {image} is listed twice; merge its captions into one row.")
            by_path[image] = parse_captions(row.get("captions"), where)
        paths = sorted(by_path)
        require_files(paths, self.download, manifest)
        captions = [c for p in paths for c in by_path[p]]
        if not captions:
            raise InputError(f"{manifest} has no captions. {MANIFEST_LAYOUT}")
        caption_image = np.repeat(np.arange(len(paths), dtype=np.int64), [len(by_path[p]) for p in paths])
        return CaptionSet(images=Images(tuple(paths)), captions=tuple(captions), caption_image=caption_image)
