"""How large, how thin and in which format an image may be before mcip decodes or resizes it.

Every encoder path (index build, eval, training, captioning, the server) decodes through
:func:`mcip.data.images.open_image`, which checks the header against :class:`ImageLimits` before any
pixel is decoded, and resizes through the model's transform, which checks the resized size first. An
image over a limit raises :class:`ImageRefused` (an ``InputError``, so a ``ValueError``): the data paths
skip and count it with the reason, the server answers 400 (415 for a format outside the allow-list).

Why a limit on the shape and not only on the bytes: the eval and train transforms scale the SHORTER side
to ``1.125 * S``, so the resized image has ``(1.125 S)^2 * aspect`` pixels. A 1 x 20,000 px PNG is 121
bytes, and resizing it for S = 224 allocates about 5 GB; 1 x 16,000,000 px overflows inside Pillow.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from mcip.errors import ConfigError, InputError

# Pillow's own decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS): 2**30 / 4 / 3 pixels.
PILLOW_BOMB_PIXELS = 89_478_485
ENV_VARS = {
    "max_aspect_ratio": "MCIP_MAX_IMAGE_ASPECT",
    "max_pixels": "MCIP_MAX_IMAGE_PIXELS",
    "max_resized_pixels": "MCIP_MAX_RESIZED_PIXELS",
}


class ImageRefused(InputError):
    """An image over a limit of :class:`ImageLimits` (aspect ratio, pixels, resized pixels)."""


class ImageFormatRefused(ImageRefused):
    """An image in a format outside :attr:`ImageLimits.formats` (the server answers 415)."""


@dataclass(frozen=True)
class ImageLimits:
    """Limits checked before an image is decoded (header) and before it is resized.

    Args:
        max_aspect_ratio: longer side / shorter side. The widest real images (panoramas, web banners,
            long screenshots and receipts) stay under about 30:1; at 50:1 the centre crop the models
            see covers under 2% (1 / (1.125 * 50)) of the long side, so the embedding says little
            about such an image anyway.
        max_pixels: width x height of the decoded image. The default is Pillow's own decompression-bomb
            threshold (89,478,485 px, about 340 MiB as Pillow's 4-byte RGB): above it, Pillow's
            ``DecompressionBombWarning`` is a refusal here (and Pillow itself refuses twice as many), so
            a higher value also needs ``PIL.Image.MAX_IMAGE_PIXELS`` raised.
        max_resized_pixels: pixels of the image after the transform's shorter-side resize, before the
            crop. 25,000,000 px (about 100 MB in Pillow) lets every image within the aspect limit
            through for model input sizes up to S = 628 px: (1.125 S)^2 * 50 <= 25e6.
        formats: the Pillow format names accepted; others are refused without running their decoder
            (EPS, for one, would run Ghostscript).

    :func:`default_image_limits` reads the first three from the environment (``MCIP_MAX_IMAGE_ASPECT``,
    ``MCIP_MAX_IMAGE_PIXELS``, ``MCIP_MAX_RESIZED_PIXELS``), which also reaches data-loader workers.
    """

    max_aspect_ratio: float = 50.0
    max_pixels: int = PILLOW_BOMB_PIXELS
    max_resized_pixels: int = 25_000_000
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

    def __post_init__(self) -> None:
        if not self.max_aspect_ratio >= 1.0:  # also refuses NaN
            raise ConfigError(f"max_aspect_ratio must be at least 1, got {self.max_aspect_ratio}.")
        for name in ("max_pixels", "max_resized_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer (pixels), got {value!r}.")
        unknown = sorted(set(self.formats) - set(pillow_formats()))
        if not self.formats or unknown:
            raise ConfigError(
                f"formats must name Pillow formats that can be read; unknown: {unknown or 'none given'} "
                f"(readable: {', '.join(pillow_formats())})."
            )

    def describe_formats(self) -> str:
        """``"JPEG, PNG, WEBP, GIF, BMP or TIFF"``."""
        *head, last = self.formats
        return f"{', '.join(head)} or {last}" if head else last


def pillow_formats() -> list[str]:
    """Names of the formats this Pillow can open."""
    from PIL import Image

    Image.init()
    return sorted(Image.OPEN)


def default_image_limits() -> ImageLimits:
    """:class:`ImageLimits` with the overrides set in the environment (see :data:`ENV_VARS`)."""
    return _limits_from_env(tuple(os.environ.get(var) for var in ENV_VARS.values()))


@functools.lru_cache(maxsize=8)
def _limits_from_env(values: tuple[str | None, ...]) -> ImageLimits:
    kwargs = {}
    for (field, var), raw in zip(ENV_VARS.items(), values, strict=True):
        if raw is None or not raw.strip():
            continue
        try:
            kwargs[field] = float(raw) if field == "max_aspect_ratio" else int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"The environment variable {var} must be a number, got {raw!r}.") from None
    try:
        return ImageLimits(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (set by {', '.join(ENV_VARS[f] for f in kwargs)})") from None


def check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    """Refuse a decoded size ``(width, height)`` in px over the aspect-ratio or pixel limit."""
    width, height = size
    if min(width, height) < 1:
        raise ImageRefused(f"The image is {width} x {height} px: it has no pixels.")
    aspect = max(width, height) / min(width, height)
    if aspect > limits.max_aspect_ratio:
        raise ImageRefused(
            f"The image is {width} x {height} px, an aspect ratio of {aspect:,.0f}:1, over the limit of "
            f"{limits.max_aspect_ratio:g}:1 (max_aspect_ratio); crop it to a less extreme shape."
        )
    if width * height > limits.max_pixels:
        raise ImageRefused(
            f"The image is {width} x {height} = {width * height:,} px, over the limit of "
            f"{limits.max_pixels:,} px (max_pixels; could be a decompression bomb); scale it down."
        )


def check_resize(size: tuple[int, int], shorter_side: int, limits: ImageLimits) -> None:
    """Refuse a ``(width, height)`` image whose shorter side scaled to ``shorter_side`` px would have
    more than ``limits.max_resized_pixels`` pixels (the size torchvision's ``Resize(int)`` makes)."""
    width, height = size
    short, long = min(width, height), max(width, height)
    if short < 1:
        raise ImageRefused(f"The image is {width} x {height} px: it has no pixels.")
    resized = shorter_side * int(shorter_side * long / short)
    if resized > limits.max_resized_pixels:
        raise ImageRefused(
            f"The image is {width} x {height} px; scaled to {shorter_side} px on its shorter side it would "
            f"have {resized:,} px, over the limit of {limits.max_resized_pixels:,} (max_resized_pixels); "
            "crop it to a less extreme shape."
        )
