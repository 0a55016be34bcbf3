"""One "product photo" of an emoji drawing: a procedural surface (:data:`SURFACES`, numpy and Pillow), a
soft shadow, the drawing at a random scale, rotation and position, a colour shift, sometimes a blur, and
JPEG compression at a random quality (``mcip.lab.catalogue`` uses it; docs/fit-example.md)."""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np

SCALE = (0.35, 0.85)  # the drawing's longer side, as a fraction of the frame
MAX_ROTATION = 25.0  # degrees
CUT_PROBABILITY = 0.2  # the drawing partly out of the frame
JPEG_QUALITY = (40, 95)
SURFACES = {
    "wood": ("a wooden table", "an oak board", "a wooden floor"),
    "stone": ("a speckled stone counter", "a granite slab", "a concrete floor"),
    "gradient": ("a studio backdrop", "a coloured backdrop"),
    "checker": ("a checkered cloth", "a tiled floor"),
    "fabric": ("a linen cloth", "a woven fabric"),
    "clutter": ("a busy shelf", "a cluttered desk"),
}
"""Background kind -> how a caption names the surface."""


# ---- backgrounds: float arrays (H, W, 3) in [0, 1]


def _color(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    hue = rng.random() if hue is None else hue
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.15, 0.8), rng.uniform(0.3, 0.95)))


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise (H, W) in [0, 1]: a random ``cells`` x ``cells`` grid resized bicubically."""
    from PIL import Image

    grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255.0


def _mix(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * (1.0 - t[..., None]) + b * t[..., None]


def _coords(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle: (u, v), each (H, W)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    return x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)


def _texture(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    u, v = _coords(rng, size)
    hue = rng.uniform(0.04, 0.12) if kind == "wood" and rng.random() < 0.7 else None
    a, b = _color(rng, hue), _color(rng, hue)
    if kind == "wood":
        warp = 1.5 * _smooth(rng, size, 4) + 0.3 * _smooth(rng, size, 24)
        t = (0.5 + 0.5 * np.sin(2 * np.pi * (v / rng.uniform(6, 20) + warp))) ** rng.uniform(1, 4)
    elif kind == "stone":
        t = 0.6 * _smooth(rng, size, 6) + 0.4 * _smooth(rng, size, 28)
        t = np.clip(t + (rng.random((size, size)) < 0.04) * 0.5, 0, 1)
    elif kind == "gradient":
        t = u / max(float(np.abs(u).max()), 1.0)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == "checker":
        cell = rng.uniform(10, 40)
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    elif kind == "fabric":
        period = rng.uniform(3, 8)
        t = 0.5 + 0.25 * np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / (period * rng.uniform(1, 3)))
        t = t + 0.3 * (_smooth(rng, size, 10) - 0.5)
    else:  # clutter: blurred blobs of other colours on a gradient
        return _clutter(rng, size, _mix(u / size % 1.0, a, b))
    image = _mix(np.clip(t, 0, 1).astype(np.float32), a, b)
    return np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)


def _clutter(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.fromarray((base * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 14))):
        x, y = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.1, 0.45, 2) * size
        color = tuple(int(c * 255) for c in _color(rng))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + w, y + h], fill=color)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(2, 6)))
    return np.asarray(image, np.float32) / 255.0


# ---- the photo


def cutout(path: Path):
    """The drawing at ``path`` as RGBA cropped to its visible part; a drawing without transparency has
    its near-white pixels made transparent (the lab's manifest images are composited onto white)."""
    from mcip.data.images import open_image

    image = open_image(path)
    if "A" not in image.getbands() and "transparency" not in image.info:
        from PIL import Image

        image = image.convert("RGB")
        whiteness = np.asarray(image, np.float32).sum(axis=2)  # 765: white
        image.putalpha(
            Image.fromarray(np.round(np.clip((765.0 - whiteness) / 45.0, 0, 1) * 255).astype(np.uint8))
        )
    rgba = image.convert("RGBA")
    box = rgba.getchannel("A").getbbox()
    return rgba.crop(box) if box else rgba


def _place(rng: np.random.Generator, drawing, size: int):
    """The drawing scaled, rotated and positioned: (RGBA image, (x, y) of its top-left corner)."""
    from PIL import Image

    side = rng.uniform(*SCALE) * size
    factor = side / max(drawing.size)
    scaled = drawing.resize(
        (max(1, round(drawing.width * factor)), max(1, round(drawing.height * factor))),
        Image.Resampling.BICUBIC,
    )
    turned = scaled.rotate(rng.uniform(-MAX_ROTATION, MAX_ROTATION), Image.Resampling.BICUBIC, expand=True)
    turned = turned.crop(turned.getchannel("A").getbbox() or (0, 0, *turned.size))
    cut = rng.random() < CUT_PROBABILITY
    corner = []
    for extent in turned.size:
        low, high = (-0.35 * extent, size - 0.65 * extent) if cut else sorted((0.0, size - extent))
        corner.append(round(rng.uniform(low, high)))
    return turned, (corner[0], corner[1])


def render_photo(drawing, rng: np.random.Generator, size: int) -> tuple[bytes, str]:
    """One JPEG photo of ``drawing`` (RGBA) on a random surface; returns (bytes, surface kind)."""
    from PIL import Image, ImageEnhance, ImageFilter

    kind = list(SURFACES)[int(rng.integers(len(SURFACES)))]
    background = _texture(kind, rng, size)
    placed, (x, y) = _place(rng, drawing, size)
    shadow = Image.new("L", (size, size), 0)
    dx, dy = (int(v) for v in rng.integers(2, 9, 2))
    shadow.paste(placed.getchannel("A"), (x + dx, y + dy))
    shadow = shadow.filter(ImageFilter.GaussianBlur(rng.uniform(3, 7)))
    darken = 1.0 - rng.uniform(0.2, 0.5) * np.asarray(shadow, np.float32)[..., None] / 255.0
    photo = Image.fromarray((background * darken * 255).astype(np.uint8)).convert("RGBA")
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(placed, (x, y))
    photo = Image.alpha_composite(photo, layer).convert("RGB")
    gains = rng.uniform(0.9, 1.1, 3) * rng.uniform(0.85, 1.15)
    photo = Image.fromarray(np.clip(np.asarray(photo, np.float32) * gains, 0, 255).astype(np.uint8))
    photo = ImageEnhance.Color(photo).enhance(rng.uniform(0.75, 1.25))
    if rng.random() < 0.5:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3)))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
    return buffer.getvalue(), kind
