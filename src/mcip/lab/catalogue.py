"""A catalogue that looks like product photos, made from the prepared lab's emoji (``examples/photo_catalogue.py``,
docs/fit-example.md): the data ``mcip fit`` is shown on, where fine-tuning should clearly win.

Products are base emoji of the lab's **test** split (classes the lab's aligned base model never trained on),
one class per base emoji (skin-tone variants differ mostly in colour, which the photos' colour shifts
blur) and none of the ``Component`` category (colour swatches); they are taken in ``sha256(f"{seed}:{label}")``
order, so a bigger catalogue holds a smaller one's products. A "photo" is one vendor drawing (its
transparent PNG) composited onto a procedural surface with a soft shadow, at a random scale, rotation and
position, with a colour shift and JPEG compression (:func:`mcip.lab.photo.render_photo`).
Every photo draws from its own generator seeded by ``(seed, label, split, number)``, so the output is the
same bytes for the same seed and lab data. Layout of ``out``::

    train.csv, val.csv, test.csv   path,label,captions (captions: a JSON list: name and two sentences)
    images/<split>/<label>_<nn>.jpg
    names.tsv                      label<TAB>name (the CLDR name)
    pool.txt                       description sentences: the products' and other emoji's, shuffled
    catalogue.json                 seed, counts, sizes, the lab data it came from
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcip._io import atomic_dir
from mcip.data.lab_manifest import MANIFEST_NAME, SPLITS, read_lab_manifest
from mcip.errors import ConfigError
from mcip.lab.photo import JPEG_QUALITY, MAX_ROTATION, SCALE, SURFACES, cutout, render_photo

PHOTOS = {"train": 8, "val": 2, "test": 6}
"""Photos per product and split (the default)."""
SKIPPED_CATEGORIES = ("Component",)
PHOTO_TEMPLATES = (
    "{Name} on {surface}.",
    "{Category} item: {name}, {k1}, {k2}.",
    "Product photo of the {name}, from our {sub} range.",
    "{Name}, {k1} style, photographed on {surface}.",
    "Close-up: {name} ({k1}).",
    "Our {name}: {k1} and {k2}.",
    "{Name}, {category} collection, shown on {surface}.",
    "Photo of the {name} for the {sub} shelf.",
)
POOL_TEMPLATES = (
    "{Name} in stock now: {k1}, {k2}.",
    "Looking for {k1}? Try the {name}.",
    "The {name} is a favourite in {category}.",
    "New in {sub}: the {name}.",
    "{Name}, {k1}: a perfect gift.",
)


class CatalogueError(ConfigError):
    """The photo catalogue cannot be made as asked; the message says what to change."""


@dataclass(frozen=True)
class Product:
    """One product: a base emoji of the lab with its drawings (vendor -> transparent source image)."""

    label: str
    name: str
    category: str
    subcategory: str
    keywords: tuple[str, ...]
    images: dict[str, Path] = field(default_factory=dict)


@dataclass
class Catalogue:
    """What :func:`make_photo_catalogue` wrote (also in ``out/catalogue.json``)."""

    out: Path
    products: int
    counts: dict[str, int]  # split -> photos
    pool: int

    def __str__(self) -> str:
        parts = ", ".join(f"{s} {self.counts[s]}" for s in SPLITS)
        return f"{self.out}: {self.products} products; photos: {parts}; pool {self.pool} sentences"


def _rng(seed: int, *parts: object) -> np.random.Generator:
    text = ":".join(str(p) for p in (seed, *parts))
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))


def _order(seed: int, label: str) -> str:
    return hashlib.sha256(f"{seed}:{label}".encode()).hexdigest()


def _group(rows: list[dict], sources: dict[tuple[str, str], Path]) -> dict[str, Product]:
    """Label -> :class:`Product` for the base emoji (label == base) of ``rows``, skipped categories out."""
    products: dict[str, Product] = {}
    for r in rows:
        if r["label"] != r["base"] or r["category"] in SKIPPED_CATEGORIES:
            continue
        name = r["captions"][0] if r["captions"] else r["label"]
        if r["label"] not in products:
            keywords = tuple(c for c in r["captions"][1:] if c.casefold() not in name.casefold())
            products[r["label"]] = Product(r["label"], name, r["category"], r["subcategory"], keywords)
        products[r["label"]].images[r["vendor"]] = sources.get((r["vendor"], r["label"]), Path(r["path"]))
    return products


def _sources(root: Path, rows: list[dict]) -> dict[tuple[str, str], Path]:
    """(vendor, label) -> the vendor's transparent PNG from the unpacked npm package where it is there
    (the manifest's images are composited onto white); else the manifest's image."""
    from mcip.lab.emoji import read_vendor_images
    from mcip.lab.fetch import VENDOR_PREFIX

    out = {(r["vendor"], r["label"]): root / r["path"] for r in rows}
    state = root / "lab.json"
    versions = json.loads(state.read_text(encoding="utf-8")).get("versions", {}) if state.is_file() else {}
    for vendor in sorted({r["vendor"] for r in rows}):
        name = VENDOR_PREFIX + vendor
        package = root / "npm" / f"{name}-{versions.get(name)}" / "package"
        if (package / "emoji.json").is_file():
            for label, path in read_vendor_images(package, vendor).items():
                if (vendor, label) in out:
                    out[(vendor, label)] = path
    return out


def choose_products(root: Path, count: int, seed: int) -> list[Product]:
    """``count`` products of the lab's test split in ``sha256(f"{seed}:{label}")`` order."""
    root = Path(root).expanduser()
    rows = read_lab_manifest(root, "test")
    products = _group(rows, _sources(root, rows))
    if count < 1 or count > len(products):
        raise CatalogueError(
            f"Asked for {count} products; the lab at {root} has {len(products)} usable base emoji in its test "
            f"split: pass --products between 1 and {len(products)}."
        )
    return [products[label] for label in sorted(products, key=lambda x: _order(seed, x))[:count]]


# ---- texts


def _fill(template: str, product: Product, rng: np.random.Generator, surface: str = "") -> str:
    category, sub = product.category.lower(), product.subcategory.replace("-", " ")
    words = list(product.keywords) + [w for w in (sub, category) if len(product.keywords) < 2]
    k1, k2 = (words[int(i)] for i in rng.choice(len(words), 2, replace=False))
    text = template.format(
        name=product.name,
        Name=product.name[:1].upper() + product.name[1:],
        category=category,
        Category=category[:1].upper() + category[1:],
        sub=sub,
        surface=surface,
        k1=k1,
        k2=k2,
    )
    return " ".join(text.split())


def photo_captions(product: Product, kind: str, rng: np.random.Generator) -> list[str]:
    """The product name and two different description sentences for one photo on surface ``kind``."""
    surface = SURFACES[kind][int(rng.integers(len(SURFACES[kind])))]
    picks = rng.choice(len(PHOTO_TEMPLATES), 2, replace=False)
    return [product.name, *(_fill(PHOTO_TEMPLATES[int(i)], product, rng, surface) for i in picks)]


def pool_sentences(root: Path, products: list[Product], seed: int) -> list[str]:
    """A shop's text corpus: one or two sentences per product, one per other emoji (at least 150 of
    them, from any split of the lab, never a product), deduplicated and shuffled."""
    chosen = {p.label for p in products}
    others = [p for p in _group(read_lab_manifest(root), {}).values() if p.label not in chosen]
    others = sorted(others, key=lambda p: _order(seed + 1, p.label))[: max(150, len(products))]
    texts = []
    for p in products + others:
        rng = _rng(seed, p.label, "pool")
        count = 1 + int(p.label in chosen and rng.random() < 0.5)
        texts += [
            _fill(POOL_TEMPLATES[int(i)], p, rng) for i in rng.choice(len(POOL_TEMPLATES), count, False)
        ]
    texts = sorted(set(texts))
    return [texts[int(i)] for i in _rng(seed, "pool-order").permutation(len(texts))]


# ---- the catalogue


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "catalogue.json").is_file())):
        raise CatalogueError(
            f"{out} exists and is not a photo catalogue (no catalogue.json): pass a new or empty folder; "
            "an earlier catalogue there is replaced."
        )


def _write_csv(path: Path, rows: list[tuple[str, str, list[str]]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "label", "captions"])
        writer.writerows([p, label, json.dumps(c, ensure_ascii=False)] for p, label, c in rows)


def _photos(products: list[Product], photos: dict[str, int], seed: int, size: int, tmp: Path, progress: bool):
    """Render every photo under ``tmp/images``; returns split -> CSV rows, and vendor / surface counts."""
    from tqdm import tqdm

    rows: dict[str, list] = {s: [] for s in SPLITS}
    counts: dict[str, dict[str, int]] = {"vendors": {}, "surfaces": {}}
    for split in SPLITS:
        (tmp / "images" / split).mkdir(parents=True)
    for product in tqdm(products, desc="photographing products", unit="product", disable=not progress):
        vendors = sorted(product.images)
        drawings = {v: cutout(product.images[v]) for v in vendors}
        number = int(_rng(seed, product.label, "vendors").integers(len(vendors)))
        for split in SPLITS:
            for i in range(photos[split]):
                vendor, number = vendors[number % len(vendors)], number + 1
                rng = _rng(seed, product.label, split, i)
                data, kind = render_photo(drawings[vendor], rng, size)
                rel = f"images/{split}/{product.label}_{i:02d}.jpg"
                (tmp / rel).write_bytes(data)
                rows[split].append((rel, product.label, photo_captions(product, kind, rng)))
                for key, value in (("vendors", vendor), ("surfaces", kind)):
                    counts[key][value] = counts[key].get(value, 0) + 1
    return rows, counts


def make_photo_catalogue(
    root: Path,
    out: Path,
    products: int = 120,
    photos: dict[str, int] | None = None,
    seed: int = 0,
    size: int = 224,
    progress: bool = False,
) -> Catalogue:
    """Write a product-photo-like catalogue of ``products`` lab test-split emoji to ``out`` (layout in the
    module docstring); ``photos``: split -> photos per product (default :data:`PHOTOS`); ``size``: the
    photos' side in pixels. The folder is built aside and swapped in whole: an existing catalogue at
    ``out`` is replaced, any other non-empty folder refused."""
    root, out = Path(root).expanduser(), Path(out)
    photos = {**PHOTOS, **(photos or {})}
    if set(photos) != set(SPLITS) or min(photos.values()) < 1 or size < 32:
        raise CatalogueError(
            f"Photos per product {photos} and size {size}: give train, val and test at least 1 photo "
            "each and a size of at least 32 pixels."
        )
    _check_out(out)
    chosen = choose_products(root, products, seed)
    pool = pool_sentences(root, chosen, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        rows, counts = _photos(chosen, photos, seed, size, tmp, progress)
        for split in SPLITS:
            _write_csv(tmp / f"{split}.csv", rows[split])
        names = sorted((p.label, p.name) for p in chosen)
        (tmp / "names.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in names), encoding="utf-8")
        (tmp / "pool.txt").write_text("".join(t + "\n" for t in pool), encoding="utf-8")
        summary = _summary(root, chosen, photos, rows, counts, len(pool), seed, size)
        (tmp / "catalogue.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return Catalogue(out, len(chosen), {s: len(rows[s]) for s in SPLITS}, len(pool))


def _summary(root, chosen, photos, rows, counts, pool: int, seed: int, size: int) -> dict:
    state = root / "lab.json"
    return {
        "about": "Product-photo-like catalogue of the lab's test-split emoji (mcip.lab.catalogue).",
        "seed": seed,
        "products": len(chosen),
        "photos_per_product": photos,
        "photos": {s: len(rows[s]) for s in SPLITS},
        "pool_sentences": pool,
        "size": size,
        "jpeg_quality": list(JPEG_QUALITY),
        "scale": list(SCALE),
        "max_rotation_degrees": MAX_ROTATION,
        "vendors": dict(sorted(counts["vendors"].items())),
        "surfaces": dict(sorted(counts["surfaces"].items())),
        "lab_manifest_sha256": hashlib.sha256((root / MANIFEST_NAME).read_bytes()).hexdigest(),
        "lab_versions": json.loads(state.read_text("utf-8")).get("versions") if state.is_file() else None,
    }
