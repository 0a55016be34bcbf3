"""Finding and decoding images without letting one bad file stop a job."""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import IO

from mcip.data.limits import ImageFormatRefused, ImageLimits, ImageRefused, check_size, default_image_limits
from mcip.data.shard_ref import member_exists, read_member, split_member_ref
from mcip.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_MEMBER_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, or of the image member a shard reference ``SHARD.tar#KEY`` names
    (:mod:`mcip.data.shard_ref`). Raises OSError (``FileNotFoundError`` when absent)."""
    ref = split_member_ref(path)
    if ref is None:
        return Path(path).read_bytes()
    return read_member(*ref, _MEMBER_EXTS)[1]


def image_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file, or a shard reference ``SHARD.tar#KEY`` whose shard holds that sample."""
    ref = split_member_ref(path)
    return Path(path).is_file() if ref is None else member_exists(*ref)


def image_source(path: str | os.PathLike | IO[bytes]) -> str | os.PathLike | IO[bytes]:
    """What Pillow opens for ``path``: the path itself, or the bytes of a shard member as a file object."""
    if split_member_ref(path) is None:
        return path
    return io.BytesIO(read_image_bytes(path))


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


DRAFT_ENV = "MCIP_JPEG_DRAFT"


def jpeg_draft_enabled() -> bool:
    """Whether eval transforms decode JPEGs at a reduced scale (``MCIP_JPEG_DRAFT=1``; default off)."""
    return os.environ.get(DRAFT_ENV, "0") == "1"


def eval_decoding() -> str:
    """How eval transforms decode JPEGs in this process (full, or draft scaling with ``MCIP_JPEG_DRAFT=1``;
    :func:`open_image`): part of the keys of the feature caches and index build plans, so features
    decoded another way are never mixed with these."""
    return "jpeg-draft-2x" if jpeg_draft_enabled() else "full"


def open_image(
    path: str | os.PathLike | IO[bytes], limits: ImageLimits | None = None, draft: int | None = None
):
    """Decode ``path`` (a file, a shard member ``SHARD.tar#KEY`` or a binary file object) fully: truncated
    files fail here, not later.

    ``draft``: a JPEG is decoded at the smallest of 1/8, 1/4, 1/2 or full scale that keeps both sides at
    least ``draft`` pixels (libjpeg's DCT scaling: a 4000 x 3000 photo decodes at 500 x 375 for
    ``draft=252``, several times faster); other formats, and JPEGs too small to reduce, decode in full. For
    images that are resized to ``draft`` afterwards (eval transforms), not for training crops.

    Before any pixel is decoded, the header is checked against ``limits`` (default:
    :func:`~mcip.data.limits.default_image_limits`): a format outside ``limits.formats`` raises
    :class:`~mcip.data.limits.ImageFormatRefused`, an aspect ratio or pixel count over the limits (and
    Pillow's ``DecompressionBombWarning``) :class:`~mcip.data.limits.ImageRefused`; both are
    ``InputError`` (a ``ValueError``). Other bad files raise OSError (incl. ``PIL.UnidentifiedImageError``),
    ValueError or SyntaxError.
    """
    limits = limits or default_image_limits()
    with _open_header(image_source(path), limits) as img:
        check_size(img.size, limits)
        if draft and img.format == "JPEG":
            img.draft(None, (draft, draft))
        img.load()
        return img.copy()


# catch_warnings() swaps the process-wide filter list: one thread at a time (the header parse is short).
_WARNINGS_LOCK = threading.Lock()


def _new_lock_after_fork() -> None:  # a fork while another thread held it would leave it locked forever
    global _WARNINGS_LOCK
    _WARNINGS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def _open_header(path, limits: ImageLimits):
    """``Image.open`` restricted to ``limits.formats``, with Pillow's bomb warning raised as a refusal."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path, formats=limits.formats)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageRefused(f"{exc} Scale the image down.") from None
    except UnidentifiedImageError:
        found = sniff_format(path)
        if found is not None and found not in limits.formats:
            raise ImageFormatRefused(
                f"The image is in a format that is not accepted (it looks like {found}); send a "
                f"{limits.describe_formats()} image instead."
            ) from None
        raise


def sniff_format(path: str | os.PathLike | IO[bytes]) -> str | None:
    """The Pillow format whose signature the first 16 bytes match (no decoder runs), or None."""
    from PIL import Image

    try:
        if hasattr(path, "read"):
            path.seek(0)
            prefix = path.read(16)
        else:
            with open(path, "rb") as f:
                prefix = f.read(16)
    except (OSError, ValueError):
        return None
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a plugin's signature test failing on odd bytes means "not this format"
            continue
    return None
