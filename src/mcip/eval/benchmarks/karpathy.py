"""Flickr30k and MS-COCO text-to-image retrieval on the Karpathy test splits (1k and 5k images)."""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, CaptionSet, Images, Option
from mcip.eval.benchmarks.files import require, require_files
from mcip.eval.benchmarks.options import positive_int

KARPATHY_SPLITS = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"


class _Karpathy(Benchmark):
    """Text-to-image (and image-to-text) Recall@k on the ``test`` split of Karpathy's ``dataset_*.json``
    (``images[]`` with ``split``, ``filename``, ``filepath`` (COCO) and ``sentences[].raw``). Each image
    keeps its first ``captions_per_image`` captions (default 5: Flickr30k 5,000 and COCO 25,000 queries; a
    few COCO images have 6 or 7). Images are sorted by path; ``caption_image[t]`` is caption t's image row.
    """

    family = "t2i"
    table1_metric = "recall@5"
    folder: ClassVar[str]
    json_name: ClassVar[str]
    image_folder: ClassVar[str]
    option_specs: ClassVar[dict[str, Option]] = {
        "captions_per_image": Option(positive_int, 5, help="captions kept per test image, in JSON order")
    }

    @abstractmethod
    def image_path(self, folder: Path, entry: dict) -> Path:
        """The image file of one ``images[]`` entry."""

    def check(self, root: Path) -> None:
        folder = Path(root) / self.folder
        require(folder / self.json_name, self.download, folder=False)
        require(folder / self.image_folder, self.download)

    def load(self, root: Path) -> CaptionSet:
        self.check(root)
        folder = Path(root) / self.folder
        listing = folder / self.json_name
        with open(listing, encoding="utf-8") as f:
            entries = [e for e in json.load(f).get("images", []) if e.get("split") == "test"]
        if not entries:
            raise InputError(
                f"{listing} has no images in the 'test' split; is it Karpathy's {self.json_name}?"
            )
        keep = self.options["captions_per_image"]
        rows = sorted(
            (self.image_path(folder, e), [s["raw"].strip() for s in e["sentences"]][:keep]) for e in entries
        )
        paths = [p for p, _ in rows]
        require_files(paths, self.download, listing)
        captions = [c for _, texts in rows for c in texts]
        caption_image = np.repeat(np.arange(len(rows), dtype=np.int64), [len(t) for _, t in rows])
        return CaptionSet(images=Images(tuple(paths)), captions=tuple(captions), caption_image=caption_image)


@BENCHMARKS.register("flickr30k")
class Flickr30k(_Karpathy):
    """Flickr30k, Karpathy test split (1,000 images, 5,000 captions).

    Layout: ``DATA_ROOT/flickr30k/dataset_flickr30k.json`` and ``DATA_ROOT/flickr30k/flickr30k-images/*.jpg``.
    """

    name = "flickr30k"
    folder = "flickr30k"
    json_name = "dataset_flickr30k.json"
    image_folder = "flickr30k-images"
    download = (
        f"Download Karpathy's splits ({KARPATHY_SPLITS}) and put dataset_flickr30k.json in DATA_ROOT/flickr30k/; "
        "request the Flickr30k images at https://shannon.cs.illinois.edu/DenotationGraph/ and extract them so "
        "that DATA_ROOT/flickr30k/flickr30k-images/<id>.jpg exist."
    )

    def image_path(self, folder: Path, entry: dict) -> Path:
        return folder / self.image_folder / entry["filename"]


@BENCHMARKS.register("coco")
class COCO(_Karpathy):
    """MS-COCO, Karpathy test split (5,000 val2014 images, 25,000 captions).

    Layout: ``DATA_ROOT/coco/dataset_coco.json`` and ``DATA_ROOT/coco/<filepath>/<filename>``, i.e.
    ``DATA_ROOT/coco/val2014/COCO_val2014_*.jpg``.
    """

    name = "coco"
    folder = "coco"
    json_name = "dataset_coco.json"
    image_folder = "val2014"
    download = (
        f"Download Karpathy's splits ({KARPATHY_SPLITS}) and put dataset_coco.json in DATA_ROOT/coco/; download "
        "http://images.cocodataset.org/zips/val2014.zip and extract it so that "
        "DATA_ROOT/coco/val2014/COCO_val2014_*.jpg exist."
    )

    def image_path(self, folder: Path, entry: dict) -> Path:
        return folder / entry.get("filepath", self.image_folder) / entry["filename"]
