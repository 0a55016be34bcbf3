"""Finding and decoding images without letting one bad file stop a job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from mcip.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def find_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"Image folder not found: {root}.")
    if root.is_file():
        raise InputError(f"{root} is a file; pass the folder that contains the images.")
    found = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if not found:
        raise InputError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}.")
    return sorted(found)


def open_image(path: str | os.PathLike | IO[bytes]):
    """Decode ``path`` (a file or a binary file object) fully: truncated files fail here, not later.

    Raises OSError (incl. ``PIL.UnidentifiedImageError``), ValueError or SyntaxError on bad files.
    """
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return img.copy()
