"""ImageNet-1k and its variants on disk: the 1000-class label space and the folders each variant ships.

Labels are indices into the 1000 ImageNet-1k wnids sorted alphabetically (the standard class order, which
``open_clip``'s class names follow). The list comes from timm (``ImageNetInfo().label_names()``), which is
identical to the sorted folder names of the ImageNet train set, so that variants (Sketch, A, R, V2) load
without ImageNet itself on disk; every wnid folder found is checked against it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcip.errors import InputError
from mcip.eval.benchmarks.base import Images, dataset_missing
from mcip.eval.benchmarks.files import labelled, list_images, require_class_folders, sub_folders

IMAGENET_DOWNLOAD = (
    "Download ILSVRC2012 (https://image-net.org/download-images) and extract it so that "
    "DATA_ROOT/imagenet/train/<wnid>/*.JPEG and DATA_ROOT/imagenet/val/<wnid>/*.JPEG hold the 1000 class "
    "folders; the validation images ship in one flat folder: sort them into <wnid> folders, e.g. with "
    "https://raw.githubusercontent.com/soumith/imagenetloader.torch/master/valprep.sh."
)


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids, sorted: class ``c`` is ``imagenet_wnids()[c]``."""
    from timm.data import ImageNetInfo

    wnids = tuple(ImageNetInfo().label_names())
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids)
    return wnids


@functools.cache
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


@dataclass(frozen=True)
class Variant:
    """One ImageNet-labelled image set: ``DATA_ROOT/<folder>/<class folder>/*``.

    ``numbered``: the class folders are class indices ``0..999`` (ImageNetV2) instead of wnids.
    """

    folder: str
    title: str
    download: str
    numbered: bool = False

    def path(self, root: Path) -> Path:
        return Path(root) / self.folder

    def check(self, root: Path) -> None:
        require_class_folders(self.path(root), self.download)

    def class_ids(self, root: Path) -> dict[str, int]:
        """Class folder name -> ImageNet class index, for every class folder present."""
        folder = self.path(root)
        names = sub_folders(folder)
        ids = {n: _folder_class(n, self.numbered) for n in names}
        bad = [n for n, c in ids.items() if c is None]
        if bad:
            kind = "class indices 0..999" if self.numbered else "ImageNet-1k wnids (n01440764, ...)"
            raise InputError(
                f"{folder}: the sub-folders {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} are not "
                f"{kind}; {self.title} needs one folder per class named as it ships. {self.download}"
            )
        return ids  # type: ignore[return-value]

    def load(self, root: Path, per_class: int | None = None, seed: int = 0) -> Images:
        """Images sorted by (class folder, file), labels in the 1000-class space; ``per_class`` keeps a
        deterministic random sample of that many images per class (seeded by ``seed`` and the class)."""
        self.check(root)
        paths, labels = [], []
        for name, class_id in self.class_ids(root).items():
            found = list_images(self.path(root) / name)
            if per_class is not None and len(found) > per_class:
                rng = np.random.default_rng([seed, class_id])
                found = [found[i] for i in sorted(rng.choice(len(found), per_class, replace=False))]
            paths.extend(found)
            labels.extend([class_id] * len(found))
        if not paths:
            raise dataset_missing(self.path(root), self.download, "contains no images")
        return labelled(paths, labels)


def _folder_class(name: str, numbered: bool) -> int | None:
    if numbered:
        return int(name) if name.isdigit() and int(name) < 1000 else None
    return _wnid_index().get(name)


TRAIN = Variant("imagenet/train", "the ImageNet train set", IMAGENET_DOWNLOAD)
VAL = Variant("imagenet/val", "ImageNet val", IMAGENET_DOWNLOAD)
SKETCH = Variant(
    "imagenet-sketch",
    "ImageNet-Sketch",
    "Download ImageNet-Sketch (https://github.com/HaohanWang/ImageNet-Sketch, ImageNet-Sketch.zip) and "
    "move its sketch/ folder to DATA_ROOT/imagenet-sketch, so that DATA_ROOT/imagenet-sketch/<wnid>/*.JPEG exist.",
)
ADVERSARIAL = Variant(
    "imagenet-a",
    "ImageNet-A",
    "Download https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar and extract it into DATA_ROOT, so "
    "that DATA_ROOT/imagenet-a/<wnid>/*.jpg exist (200 wnids).",
)
RENDITION = Variant(
    "imagenet-r",
    "ImageNet-R",
    "Download https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar and extract it into DATA_ROOT, so "
    "that DATA_ROOT/imagenet-r/<wnid>/*.jpg exist (200 wnids).",
)
V2 = Variant(
    "imagenetv2",
    "ImageNetV2",
    "Download imagenetv2-matched-frequency.tar.gz (https://huggingface.co/datasets/vaishaal/ImageNetV2), "
    "extract it and rename imagenetv2-matched-frequency-format-val to DATA_ROOT/imagenetv2, so that "
    "DATA_ROOT/imagenetv2/<class index 0..999>/*.jpeg exist.",
    numbered=True,
)
