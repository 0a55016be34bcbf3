"""ObjectNet zero-shot: the 113 ObjectNet classes that map to ImageNet, predicted over ImageNet's 1000."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from mcip.errors import InputError
from mcip.eval.benchmarks.base import BENCHMARKS, Benchmark, Option, ZeroShotSet
from mcip.eval.benchmarks.files import labelled, list_images, read_lines, require
from mcip.eval.benchmarks.zeroshot_imagenet import CLASSES_OPTION, imagenet_classnames, openai_templates

MAPPINGS = (
    "folder_to_objectnet_label.json",
    "objectnet_to_imagenet_1k.json",
    "pytorch_to_imagenet_2012_id.json",
    "imagenet_to_label_2012_v2",
)


def _json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def objectnet_to_imagenet(mappings: Path) -> dict[str, tuple[int, ...]]:
    """ObjectNet image folder -> the ImageNet class indices (sorted-wnid order) its class maps to, for the
    113 mapped classes. ``objectnet_to_imagenet_1k.json`` names ImageNet classes by their line in
    ``imagenet_to_label_2012_v2`` (``; ``-separated); ``pytorch_to_imagenet_2012_id.json`` maps each class
    index to that line (the resolution used by wise-ft, model-soups and CLIP_benchmark)."""
    folder_label = _json(mappings / "folder_to_objectnet_label.json")
    label_names = _json(mappings / "objectnet_to_imagenet_1k.json")
    lines = read_lines(mappings / "imagenet_to_label_2012_v2")
    index_of_name = {
        lines[int(line)]: int(index)
        for index, line in _json(mappings / "pytorch_to_imagenet_2012_id.json").items()
    }
    label_ids = {}
    for label, names in label_names.items():
        unknown = [n for n in names.split("; ") if n not in index_of_name]
        if unknown:
            raise InputError(
                f"{mappings}: ObjectNet class '{label}' maps to unknown ImageNet class '{unknown[0]}'."
            )
        label_ids[label] = tuple(sorted(index_of_name[n] for n in names.split("; ")))
    return {folder: label_ids[label] for folder, label in folder_label.items() if label in label_ids}


@BENCHMARKS.register("zs_objectnet")
class ZeroShotObjectNet(Benchmark):
    """ObjectNet (Barbu et al., 2019), the 113 classes that map to ImageNet-1k (18,574 images).

    Layout (objectnet-1.0.zip, its folder renamed): ``DATA_ROOT/objectnet/images/<folder>/*.png`` and
    ``DATA_ROOT/objectnet/mappings/{folder_to_objectnet_label.json, objectnet_to_imagenet_1k.json,
    pytorch_to_imagenet_2012_id.json, imagenet_to_label_2012_v2}``.

    ``classes=imagenet``: class names are the 1000 ImageNet ones; ``label_sets[i]`` holds the
    ImageNet classes mapped to image i's ObjectNet class, and a prediction is a hit when it is one of them
    (``labels[i]`` is the smallest). ``classes=subset`` (the default) is CLIP_benchmark's protocol, as in the paper: 113-way over
    the lower-cased ObjectNet class names, labels in sorted-folder order, no label sets. Images keep their
    1-pixel border (any border crop is the preprocessing's business).
    """

    name = "zs_objectnet"
    family = "zeroshot"
    table1_metric = "top1"
    download = (
        "Download objectnet-1.0.zip from https://objectnet.dev/download.html, unzip it (the password is on "
        "that page) and rename objectnet-1.0 to DATA_ROOT/objectnet, so that DATA_ROOT/objectnet/images/<class "
        "folder>/*.png and DATA_ROOT/objectnet/mappings/ exist."
    )
    option_specs: ClassVar[dict[str, Option]] = {"classes": CLASSES_OPTION}

    def check(self, root: Path) -> None:
        folder = Path(root) / "objectnet"
        require(folder / "images", self.download)
        for name in MAPPINGS:
            require(folder / "mappings" / name, self.download, folder=False)

    def load(self, root: Path) -> ZeroShotSet:
        self.check(root)
        folder = Path(root) / "objectnet"
        folder_ids = objectnet_to_imagenet(folder / "mappings")
        paths, sets, folders = [], [], []
        for name in sorted(folder_ids):
            if not (folder / "images" / name).is_dir():
                raise self.missing(folder / "images" / name, "folder not found")
            found = list_images(folder / "images" / name)
            paths.extend(found)
            sets.extend([folder_ids[name]] * len(found))
            folders.extend([name] * len(found))
        if not paths:
            raise self.missing(folder / "images", "contains no images of the mapped classes")
        if self.options["classes"] == "subset":
            names = sorted(folder_ids)
            label_of = _json(folder / "mappings" / "folder_to_objectnet_label.json")
            index = {n: i for i, n in enumerate(names)}
            classnames = tuple(label_of[n].lower() for n in names)
            return ZeroShotSet(labelled(paths, (index[f] for f in folders)), classnames, openai_templates())
        return ZeroShotSet(
            labelled(paths, (s[0] for s in sets)),
            imagenet_classnames(),
            openai_templates(),
            label_sets=tuple(sets),
        )
