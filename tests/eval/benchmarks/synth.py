"""Tiny synthetic copies of every benchmark's on-disk layout, with 1-byte placeholder images (nothing
decodes them). Each builder fills a data root and returns the options ``create_benchmark`` needs."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Real ImageNet-1k wnids and their class indices (sorted-wnid order).
TENCH, GOLDFISH, STINGRAY = "n01440764", "n01443537", "n01498041"
WNID_INDEX = {TENCH: 0, GOLDFISH: 1, STINGRAY: 6}


def touch(root: Path, *relative: str) -> list[Path]:
    """Create placeholder files under ``root``; returns their paths."""
    paths = []
    for rel in relative:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0")
        paths.append(path)
    return paths


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def gpr1200(root: Path) -> dict:
    # 6 classes x 2 images; ids chosen so that numeric and string order differ (2 < 10 < 100).
    for c in (0, 2, 10, 11, 100, 101):
        touch(root / "gpr1200" / "images", f"{c}_b.jpg", f"{c}_a.jpg")
    return {}


def instre(root: Path) -> dict:
    touch(root / "instre", "INSTRE-S1/obj_b/2.jpg", "INSTRE-S1/obj_b/1.jpg", "INSTRE-S1/obj_a/1.jpg")
    touch(root / "instre", "INSTRE-M/pair_1/1.JPG", "INSTRE-S1/obj_a/1.txt", "gnd_instre.mat")
    return {}


def cub(root: Path) -> dict:
    folder = root / "CUB_200_2011"
    files = {1: "001.A/a1.jpg", 2: "101.K/k1.jpg", 3: "150.L/l1.jpg", 4: "200.Z/z1.jpg", 5: "101.K/k2.jpg"}
    classes = {1: 1, 2: 101, 3: 150, 4: 200, 5: 101}
    write(folder / "images.txt", "".join(f"{i} {p}\n" for i, p in files.items()))
    write(folder / "image_class_labels.txt", "".join(f"{i} {c}\n" for i, c in classes.items()))
    write(folder / "classes.txt", "1 001.A\n101 101.K\n150 150.L\n200 200.Z\n")
    touch(folder / "images", *files.values())
    return {}


def revisited(dataset: str) -> Callable[[Path], dict]:
    def build(root: Path) -> dict:
        folder = root / dataset
        imlist, qimlist = ["db_c", "db_a", "db_b"], ["q_1", "q_2"]
        touch(folder / "jpg", *(f"{n}.jpg" for n in imlist + qimlist))
        gnd = [
            {"easy": [1], "hard": [2], "junk": [0], "bbx": [1.0, 2.0, 30.0, 40.0]},
            {"easy": [], "hard": [0, 1], "junk": [], "bbx": [0.0, 0.0, 5.0, 5.0]},
        ]
        with open(folder / f"gnd_{dataset}.pkl", "wb") as f:
            pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
        return {}

    return build


def imagenet(root: Path) -> dict:
    for split in ("imagenet/train", "imagenet/val", "imagenet-sketch"):
        for wnid in WNID_INDEX:
            touch(root / split / wnid, "c.JPEG", "a.JPEG", "b.JPEG")
    touch(root / "imagenet-a" / STINGRAY, "1.jpg", "2.jpg")
    touch(root / "imagenet-a" / GOLDFISH, "1.jpg")
    touch(root / "imagenet-r" / GOLDFISH, "1.jpg")
    touch(root / "imagenetv2", "0/x.jpeg", "6/y.jpeg", "6/z.jpeg")
    return {}


def objectnet(root: Path) -> dict:
    folder = root / "objectnet"
    maps = folder / "mappings"
    # imagenet_to_label_2012_v2 is in ILSVRC2012-id order, which differs from the sorted-wnid order.
    write(maps / "imagenet_to_label_2012_v2", "goldfish, Carassius auratus\ntench, Tinca tinca\nstingray\n")
    write(maps / "pytorch_to_imagenet_2012_id.json", json.dumps({"0": 1, "1": 0, "6": 2}))
    write(
        maps / "objectnet_to_imagenet_1k.json",
        json.dumps({"Fish": "tench, Tinca tinca; goldfish, Carassius auratus", "Ray": "stingray"}),
    )
    write(
        maps / "folder_to_objectnet_label.json", json.dumps({"ray": "Ray", "fish": "Fish", "chair": "Chair"})
    )
    touch(folder / "images", "fish/2.png", "fish/1.png", "ray/1.png", "chair/1.png")
    return {}


def fgvc_aircraft(root: Path) -> dict:
    data = root / "fgvc-aircraft-2013b" / "data"
    write(data / "variants.txt", "707-320\nA300B4\nCessna 172\n")
    write(data / "images_variant_train.txt", "0000002 Cessna 172\n0000001 707-320\n")
    write(data / "images_variant_trainval.txt", "0000002 Cessna 172\n0000001 707-320\n0000003 A300B4\n")
    write(data / "images_variant_test.txt", "0000005 Cessna 172\n0000004 A300B4\n")
    touch(data / "images", *(f"000000{i}.jpg" for i in range(1, 6)))
    return {}


def _karpathy_entry(filename: str, split: str, n: int, **extra) -> dict:
    sentences = [{"raw": f" {filename} caption {k} ", "tokens": []} for k in range(n)]
    return {"filename": filename, "split": split, "sentences": sentences, **extra}


def flickr30k(root: Path) -> dict:
    folder = root / "flickr30k"
    images = [
        _karpathy_entry("2.jpg", "test", 6),
        _karpathy_entry("1.jpg", "test", 5),
        _karpathy_entry("3.jpg", "train", 5),
    ]
    write(folder / "dataset_flickr30k.json", json.dumps({"images": images, "dataset": "flickr30k"}))
    touch(folder / "flickr30k-images", "1.jpg", "2.jpg", "3.jpg")
    return {}


def coco(root: Path) -> dict:
    folder = root / "coco"
    images = [
        _karpathy_entry("COCO_val2014_2.jpg", "test", 5, filepath="val2014"),
        _karpathy_entry("COCO_val2014_1.jpg", "test", 7, filepath="val2014"),
        _karpathy_entry("COCO_val2014_3.jpg", "restval", 5, filepath="val2014"),
        _karpathy_entry("COCO_train2014_4.jpg", "train", 5, filepath="train2014"),
    ]
    write(folder / "dataset_coco.json", json.dumps({"images": images, "dataset": "coco"}))
    touch(folder / "val2014", "COCO_val2014_1.jpg", "COCO_val2014_2.jpg")
    return {}


def folder_i2i(root: Path) -> dict:
    touch(root / "mine", "dog/1.jpg", "dog/sub/2.png", "cat/1.jpg", "cat/notes.txt")
    return {"path": str(root / "mine")}


def folder_knn(root: Path) -> dict:
    touch(root / "index", "dog/1.jpg", "cat/1.jpg", "cow/1.jpg")
    touch(root / "queries", "dog/q.jpg", "cow/q.jpg")
    return {"index": str(root / "index"), "queries": str(root / "queries")}


def captions_t2i(root: Path) -> dict:
    touch(root / "pics", "b.jpg", "a.jpg", "c.jpg")
    rows = [
        {"path": "pics/b.jpg", "captions": ["a bird", "a small bird"]},
        {"path": "pics/a.jpg", "captions": "an apple|a red apple|fruit"},
        {"path": "pics/c.jpg"},
    ]
    manifest = write(root / "captions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return {"manifest": str(manifest)}


def classnames_zeroshot(root: Path) -> dict:
    touch(root / "zs", "dog/1.jpg", "cat/1.jpg", "cat/2.jpg")
    names = write(root / "names.txt", "cat\tdomestic cat\nbird\tsmall bird\ndog\tdog\n")
    return {"images": str(root / "zs"), "classnames": str(names)}


def manifest_rows(root: Path) -> Path:
    """A manifest of 3 classes in train / test splits (a JSONL with a split column)."""
    rows = [
        {"path": "m/dog/1.jpg", "label": "dog", "split": "train", "captions": ["a dog"]},
        {"path": "m/cat/1.jpg", "label": "cat", "split": "train"},
        {"path": "m/cow/1.jpg", "label": "cow", "split": "train", "captions": "a cow|cattle"},
        {"path": "m/dog/2.jpg", "label": "dog", "split": "test", "captions": ["a dog", "a puppy"]},
        {"path": "m/cow/2.jpg", "label": "cow", "split": "test"},
    ]
    touch(root, *(r["path"] for r in rows))
    return write(root / "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def manifest_i2i(root: Path) -> dict:
    return {"manifest": str(manifest_rows(root))}


def manifest_knn(root: Path) -> dict:
    return {"manifest": str(manifest_rows(root)), "index": "train", "query": "test"}


def manifest_zeroshot(root: Path) -> dict:
    names = write(root / "names.tsv", "cat\tdomestic cat\nbird\tsmall bird\ndog\tdog\ncow\ta cow\n")
    return {"manifest": str(manifest_rows(root)), "split": "test", "names": str(names)}


def lab(root: Path) -> dict:
    """A prepared-lab manifest: 6 emoji x 2 vendors, two sub-categories, every split."""
    rows = []
    for n in range(6):
        for vendor in ("acme", "globex"):
            path = Path("images") / vendor / f"e{n}.png"
            touch(root, str(path))
            rows.append(
                {
                    "path": str(path),
                    "label": f"e{n}",
                    "id": f"{vendor}/e{n}",
                    "captions": [f"emoji {n}", "tag"],
                    "vendor": vendor,
                    "base": f"e{n}",
                    "category": "C",
                    "subcategory": f"sub-{n % 2}",
                    "split": ("train", "train", "val", "val", "test", "test")[n],
                }
            )
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {}


BUILDERS: dict[str, Callable[[Path], dict]] = {
    "gpr1200": gpr1200,
    "instre": instre,
    "cub": cub,
    "roxford5k": revisited("roxford5k"),
    "rparis6k": revisited("rparis6k"),
    **{f"knn_in_{v}": imagenet for v in ("val", "sketch", "a", "r", "v2")},
    **{f"zs_in_{v}": imagenet for v in ("val", "sketch", "a", "r")},
    "zs_objectnet": objectnet,
    "fgvc_aircraft": fgvc_aircraft,
    "flickr30k": flickr30k,
    "coco": coco,
    "folder_i2i": folder_i2i,
    "folder_knn": folder_knn,
    "captions_t2i": captions_t2i,
    "classnames_zeroshot": classnames_zeroshot,
    "manifest_i2i": manifest_i2i,
    "manifest_knn": manifest_knn,
    "manifest_zeroshot": manifest_zeroshot,
    **{name: lab for name in ("lab_i2i", "lab_i2i_r1", "lab_knn", "lab_zeroshot", "lab_t2i")},
}


def absent_options(name: str, root: Path) -> dict:
    """Options that point a generic benchmark at absent files under ``root`` (empty for the others)."""
    return {
        "folder_i2i": {"path": root / "absent"},
        "folder_knn": {"index": root / "absent_index", "queries": root / "absent_queries"},
        "captions_t2i": {"manifest": root / "absent.jsonl"},
        "classnames_zeroshot": {"images": root / "absent", "classnames": root / "absent.txt"},
        **{f"manifest_{f}": {"manifest": root / "absent.csv"} for f in ("i2i", "knn", "zeroshot")},
    }.get(name, {})


def labels(images) -> list[int]:
    assert images.labels.dtype == np.int64
    return images.labels.tolist()
