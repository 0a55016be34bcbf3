"""A small synthetic problem with the paper's structure: class identity is visual (colour x shape) but
captions only name the shape, so they are shared between classes."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 50, 190),
}
SHAPES = ("circle", "square", "triangle")
HELD_OUT = {("yellow", "triangle"), ("purple", "triangle"), ("green", "triangle"), ("purple", "circle")}


def draw(colour: str, shape: str, rng: random.Random, size: int = 40) -> Image.Image:
    img = Image.new("RGB", (size, size), tuple(rng.randint(200, 255) for _ in range(3)))
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 4, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    fill = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLOURS[colour])
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def make_dataset(root: Path, per_class: int = 12, seed: int = 0, held_out: bool = False) -> Path:
    """Writes PNGs, ``manifest.csv`` (path,label,captions) and returns the manifest path.

    ``held_out=False``: the 11 training classes; ``True``: the 4 held-out ones (three triangles differing
    only in colour, which the shape-only captions cannot tell apart).
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for colour in COLOURS:
        for shape in SHAPES:
            if ((colour, shape) in HELD_OUT) != held_out:
                continue
            label = f"{colour}_{shape}"
            for i in range(per_class):
                path = root / label / f"{i}.png"
                path.parent.mkdir(exist_ok=True)
                draw(colour, shape, rng).save(path)
                captions = [f"a {shape}", f"a drawing of a {shape}", f"one {shape} on a plain background"]
                rows.append({"path": f"{label}/{i}.png", "label": label, "captions": json.dumps(captions)})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "captions"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
