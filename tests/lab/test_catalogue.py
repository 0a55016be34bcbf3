"""The photo catalogue (``mcip.lab.catalogue``) on a tiny fake lab root: a manifest in the lab's format and a
handful of generated RGBA drawings; nothing from ``~/.cache``."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mcip.data.manifest import read_manifest
from mcip.lab.catalogue import CatalogueError, Product, _fill, make_photo_catalogue
from mcip.lab.photo import cutout

VENDORS = ("facebook", "google", "twitter")
PHOTOS = {"train": 3, "val": 2, "test": 2}
SIZE = 64
# label, split, category; the test split's usable products are T0..T5 (not the skin-tone variant T0-1F3FB,
# whose base is T0, nor the Component swatch C0).
EMOJI = [
    *((f"T{i}", "test", "Objects") for i in range(6)),
    ("C0", "test", "Component"),
    *((f"R{i}", "train", "Animals & Nature") for i in range(4)),
    *((f"V{i}", "val", "Food & Drink") for i in range(2)),
]
PRODUCTS = [f"T{i}" for i in range(6)]


def _drawing(path: Path, index: int, vendor: int) -> None:
    """A 32 x 32 RGBA drawing: a coloured shape on a transparent background."""
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    color = (40 * index % 256, 255 - 30 * index % 256, 60 * vendor + 20, 255)
    box = [4 + vendor, 6, 27, 25 - index % 4]
    (draw.ellipse if index % 2 else draw.rectangle)(box, fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _row(label: str, base: str, split: str, category: str, vendor: str) -> dict:
    name = f"thing {label.lower()}"
    return {
        "path": f"images/{vendor}/{label}.png",
        "label": label,
        "id": f"{vendor}/{label}",
        "captions": [name, f"{name} sign", f"tag{label.lower()}", "shiny"],
        "vendor": vendor,
        "base": base,
        "category": category,
        "subcategory": "thing-small",
        "split": split,
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lab")
    rows = []
    emoji = [(label, label, split, cat) for label, split, cat in EMOJI] + [
        ("T0-1F3FB", "T0", "test", "Objects")
    ]
    for index, (label, base, split, category) in enumerate(emoji):
        for v, vendor in enumerate(VENDORS if index % 3 else VENDORS[1:]):
            _drawing(root / "images" / vendor / f"{label}.png", index, v)
            rows.append(_row(label, base, split, category, vendor))
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def _make(lab: Path, out: Path, products: int = 4, seed: int = 0):
    return make_photo_catalogue(lab, out, products=products, photos=PHOTOS, seed=seed, size=SIZE)


@pytest.fixture(scope="module")
def catalogue(lab, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cat") / "catalogue"
    _make(lab, out)
    return out


def _csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_products_are_the_first_test_split_bases_in_seeded_hash_order(catalogue):
    order = sorted(PRODUCTS, key=lambda label: hashlib.sha256(f"0:{label}".encode()).hexdigest())
    labels = {r["label"] for r in _csv(catalogue / "train.csv")}
    assert labels == set(order[:4])


def test_counts_per_split_and_per_product(catalogue):
    labels = {r["label"] for r in _csv(catalogue / "train.csv")}
    for split, count in PHOTOS.items():
        rows = _csv(catalogue / f"{split}.csv")
        assert len(rows) == 4 * count
        per_label = {label: sum(r["label"] == label for r in rows) for label in labels}
        assert per_label == dict.fromkeys(labels, count)
        assert all((catalogue / r["path"]).is_file() for r in rows)
    summary = json.loads((catalogue / "catalogue.json").read_text(encoding="utf-8"))
    assert summary["photos"] == {"train": 12, "val": 8, "test": 8}
    assert summary["products"] == 4 and summary["seed"] == 0
    assert sum(summary["vendors"].values()) == 28 and set(summary["vendors"]) == set(VENDORS)
    assert len(list((catalogue / "images").rglob("*.jpg"))) == 28


def test_photos_are_jpegs_of_the_size_and_no_two_share_content(catalogue):
    paths = sorted((catalogue / "images").rglob("*.jpg"))
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert len(digests) == len(paths) == 28
    with Image.open(paths[0]) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (SIZE, SIZE), "RGB")


def test_names_match_the_labels(catalogue):
    lines = (catalogue / "names.tsv").read_text(encoding="utf-8").splitlines()
    names = dict(line.split("\t") for line in lines)
    assert names == {
        label: f"thing {label.lower()}" for label in {r["label"] for r in _csv(catalogue / "train.csv")}
    }
    assert list(names) == sorted(names)


def test_csvs_read_back_through_the_manifest_reader_with_captions(catalogue):
    names = dict(
        line.split("\t") for line in (catalogue / "names.tsv").read_text(encoding="utf-8").splitlines()
    )
    for split in PHOTOS:
        raw = _csv(catalogue / f"{split}.csv")
        records = read_manifest(catalogue / f"{split}.csv")
        assert [r.label for r in records] == [r["label"] for r in raw]
        assert [r.path for r in records] == [catalogue / r["path"] for r in raw]
        for record, row in zip(records, raw, strict=True):
            assert list(record.captions) == json.loads(row["captions"])
            name, first, second = record.captions
            assert name == names[record.label]
            assert first != second
            assert name.casefold() in first.casefold() and name.casefold() in second.casefold()


def test_pool_describes_the_products_and_other_emoji_without_repeats(catalogue):
    pool = [t.casefold() for t in (catalogue / "pool.txt").read_text(encoding="utf-8").splitlines()]
    assert len(pool) == len(set(pool))
    chosen = {r["label"] for r in _csv(catalogue / "train.csv")}
    usable = [label for label, _, category in EMOJI if category != "Component"]
    about = {label: sum(f"thing {label.lower()}" in t for t in pool) for label in usable}
    assert all(about[label] in (1, 2) for label in chosen)  # one or two sentences per product
    assert all(about[label] == 1 for label in usable if label not in chosen)  # one per other emoji
    assert not any("thing c0" in t for t in pool)  # never the skipped category
    assert len(pool) == sum(about.values())


def test_same_seed_same_bytes_other_seed_other_photos(lab, catalogue, tmp_path):
    _make(lab, tmp_path / "again")
    assert _files(tmp_path / "again") == _files(catalogue)
    _make(lab, tmp_path / "other", seed=1)
    other = _files(tmp_path / "other")
    assert not set(other.values()) & {v for k, v in _files(catalogue).items() if k.endswith(".jpg")}


def test_an_earlier_catalogue_is_replaced_other_folders_refused(lab, tmp_path):
    out = tmp_path / "cat"
    _make(lab, out, products=4)
    _make(lab, out, products=2)
    assert len(list((out / "images").rglob("*.jpg"))) == 2 * sum(PHOTOS.values())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CatalogueError, match="not a photo catalogue"):
        _make(lab, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_too_many_products_or_no_photos_fail_with_the_fix(lab, tmp_path):
    with pytest.raises(CatalogueError, match=r"has 6 usable base emoji.*between 1 and 6"):
        _make(lab, tmp_path / "big", products=7)
    with pytest.raises(CatalogueError, match="at least 1 photo"):
        make_photo_catalogue(lab, tmp_path / "none", products=2, photos={"val": 0}, size=SIZE)
    assert not (tmp_path / "big").exists() and not (tmp_path / "none").exists()


def test_cutout_keeps_transparency_and_keys_out_white(tmp_path):
    rgba = Image.new("RGBA", (10, 8), (0, 0, 0, 0))
    rgba.paste((200, 0, 0, 255), (2, 3, 6, 7))
    rgba.save(tmp_path / "a.png")
    cut = cutout(tmp_path / "a.png")
    assert cut.size == (4, 4) and cut.getpixel((0, 0)) == (200, 0, 0, 255)
    white = Image.new("RGB", (10, 8), (255, 255, 255))
    white.paste((0, 0, 200), (1, 1, 4, 6))
    white.paste((250, 250, 250), (6, 2, 7, 3))  # near-white: 15 below white of 765 -> alpha 255 * 15 / 45
    white.save(tmp_path / "w.png")
    alpha = np.asarray(cutout(tmp_path / "w.png").getchannel("A"))
    expected = np.zeros((5, 6), np.uint8)
    expected[:, :3] = 255
    expected[1, 5] = 85
    assert np.array_equal(alpha, expected)


def test_two_keywords_in_a_sentence_are_different_even_for_a_product_with_one():
    product = Product("1F641", "slightly frowning face", "Smileys & Emotion", "face-concerned", ("sad",))
    pairs = {tuple(_fill("{k1}|{k2}", product, np.random.default_rng(s)).split("|")) for s in range(40)}
    words = {"sad", "face concerned", "smileys & emotion"}
    assert pairs <= {(a, b) for a in words for b in words if a != b} and len(pairs) > 1
