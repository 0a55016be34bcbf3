"""Query inputs: validated before any model runs, with messages that say what is wrong."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mcip.data.images import open_image
from mcip.errors import InputError

MAX_TEXT_CHARS = 1000
MAX_K = 1000


def check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise InputError(f"k must be an integer from 1 to {MAX_K}, got {k!r}.")


def check_text(text: str) -> str:
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}.")
    if not text.strip():
        raise InputError(
            "The text query is empty; type a few words describing the image you are looking for."
        )
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"The text query has {len(text)} characters; the limit is {MAX_TEXT_CHARS}.")
    return text.strip()


def open_query_image(image: Any, draft: int | None = None):
    """A PIL image from a PIL image, bytes, a binary file object or a path; InputError if undecodable.
    ``draft``: the eval transform's ``draft_size`` (a JPEG decodes as the indexed images did)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, bytes | bytearray | memoryview):
        if len(image) == 0:
            raise InputError("The query image is empty (0 bytes).")
        source, where = io.BytesIO(bytes(image)), "the uploaded image"
    elif isinstance(image, str | os.PathLike):
        source, where = Path(image), str(image)
        if not source.is_file():
            raise InputError(f"Query image not found: {image}.")
    elif hasattr(image, "read"):
        source, where = image, "the uploaded image"
    else:
        raise InputError(
            f"image must be a PIL image, bytes, a file object or a path, got {type(image).__name__}."
        )
    try:
        return open_image(source, draft=draft)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InputError(f"Cannot decode {where} as an image ({type(exc).__name__}: {exc}).") from None


UNIT_TOLERANCE = 2e-6
"""A query whose squared length is within this of 1 is already unit: it is searched as it is (its scores
differ from those of the renormalised vector by less than 1e-6, about 8 float32 rounding steps)."""


def unit_query(vector: np.ndarray, what: str = "query vector") -> np.ndarray:
    """``vector`` (D,) float32 scaled to unit length, or itself when it is unit already (the embeddings
    of every model and index are); InputError for a zero or non-finite vector."""
    if abs(float(np.dot(vector, vector)) - 1.0) < UNIT_TOLERANCE:  # False for nan and inf
        return vector
    return unit_vector(vector, what)


def unit_vector(vector: np.ndarray, what: str) -> np.ndarray:
    norm = math.sqrt(float(np.dot(vector, vector)))
    if not math.isfinite(norm) or norm < 1e-12:
        raise InputError(f"The {what} has zero length or non-finite values; it cannot rank images.")
    return (vector / norm).astype(np.float32, copy=False)
