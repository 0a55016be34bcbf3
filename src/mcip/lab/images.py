"""Compositing the vendor PNGs (RGBA, transparent background) onto white, as RGB PNGs."""

from __future__ import annotations

import zlib
from pathlib import Path

from mcip._io import atomic_open
from mcip.lab.emoji import EmojiClass


def composite_on_white(src: Path, dst: Path) -> str | None:
    """Save ``src`` (any mode, transparency) composited onto white as an RGB PNG at ``dst``.

    Returns None on success (or when ``dst`` exists), else the reason the file could not be read.
    """
    if dst.is_file():
        return None
    from PIL import Image

    from mcip.data.images import open_image

    try:  # through the image limits (format allow-list, shape, decompression bombs) as every decoder
        rgba = open_image(src).convert("RGBA")
    except (OSError, SyntaxError, ValueError, zlib.error) as exc:
        return f"{src.name}: {exc}"
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    with atomic_open(dst) as handle:
        Image.alpha_composite(white, rgba).convert("RGB").save(handle, format="PNG")
    return None


def composite_all(
    out_dir: Path, classes: list[EmojiClass], progress: bool
) -> tuple[dict[str, list[str]], list[str]]:
    """Composite every candidate image; returns label -> vendors with a good image, and the skipped list."""
    from tqdm import tqdm

    jobs = [(c.label, v, p) for c in classes for v, p in c.images.items()]
    for vendor in {v for _, v, _ in jobs}:
        (out_dir / vendor).mkdir(parents=True, exist_ok=True)
    done: dict[str, list[str]] = {}
    skipped: list[str] = []
    for label, vendor, src in tqdm(
        jobs, desc="compositing emoji onto white", unit="img", disable=not progress
    ):
        error = composite_on_white(src, out_dir / vendor / f"{label}.png")
        if error is None:
            done.setdefault(label, []).append(vendor)
        else:
            skipped.append(f"{vendor}/{label}: {error}")
    return done, skipped
