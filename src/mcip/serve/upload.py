"""Reading an image upload (multipart form) with the size limit enforced while the body streams in,
and decoding it within the image limits (format, aspect ratio, pixels)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from mcip.data.images import open_image
from mcip.data.limits import ImageFormatRefused, ImageLimits, ImageRefused

# Room for the multipart boundaries, part headers and the small text fields next to the image.
FORM_OVERHEAD_BYTES = 64 * 1024
FIELDS = ("image", "text", "alpha", "k", "where")  # where: repeatable (metadata filters)
MAX_WHERE_FIELDS = 16
# A 10 MiB upload at 1 Mbit/s takes 84 s; a client slower than this holds a connection for nothing.
DEFAULT_UPLOAD_TIMEOUT_S = 120.0
# Errors of a decode or a resize that the limits did not foresee: the upload's fault, so 400 (not 500).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, OverflowError, MemoryError)


@dataclass(frozen=True)
class ImageForm:
    """The fields of ``POST /search``: ``image`` is required, the others are optional strings."""

    image: bytes
    filename: str | None
    text: str | None
    alpha: str | None
    k: str | None
    where: tuple[str, ...] = ()


def too_large(max_upload_bytes: int) -> HTTPException:
    return HTTPException(
        413, f"The upload is larger than this server's limit of {format_bytes(max_upload_bytes)}."
    )


def format_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


async def _limited(request: Request, limit: int, max_upload_bytes: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_large(max_upload_bytes)
        yield chunk


async def read_image_form(
    request: Request, max_upload_bytes: int, timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S
) -> ImageForm:
    """Parse ``multipart/form-data`` with an ``image`` file field, reading at most ``max_upload_bytes``
    (plus the form's own overhead) before giving up with 413; nothing larger is ever buffered.

    Raises HTTPException: 413 too large, 415 not multipart, 400 malformed or without an image, 408 when
    the body has not arrived within ``timeout_s`` seconds. A client that hangs up mid-upload raises
    ``starlette.requests.ClientDisconnect`` (the app answers it quietly).
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(
            415,
            "Send the image as multipart/form-data with a file field named 'image' (and optional "
            "'text', 'alpha', 'k', 'where'); for text queries use GET /search?text=...",
        )
    limit = max_upload_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(max_upload_bytes)
    parser = MultiPartParser(
        request.headers,
        _limited(request, limit, max_upload_bytes),
        max_files=1,
        max_fields=len(FIELDS) - 1 + MAX_WHERE_FIELDS,
    )
    try:
        with anyio.fail_after(timeout_s):
            form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"Malformed multipart form: {exc.message}") from exc
    except TimeoutError:
        raise HTTPException(
            408, f"The upload did not arrive within {timeout_s:g} s; send a smaller image or retry."
        ) from None
    try:
        return await _fields(form, max_upload_bytes)
    finally:
        await form.close()


async def _fields(form, max_upload_bytes: int) -> ImageForm:
    unknown = sorted(set(form.keys()) - set(FIELDS))
    if unknown:
        raise HTTPException(400, f"Unknown form field(s) {', '.join(unknown)}; expected {', '.join(FIELDS)}.")
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise HTTPException(400, "The form has no file field named 'image'.")
    data = await image.read(max_upload_bytes + 1)
    if len(data) > max_upload_bytes:
        raise too_large(max_upload_bytes)
    if not data:
        raise HTTPException(400, "The uploaded image is empty (0 bytes).")
    texts = {}
    for name in ("text", "alpha", "k"):
        value = form.get(name)
        if isinstance(value, UploadFile):
            raise HTTPException(400, f"The form field '{name}' must be a plain value, not a file.")
        texts[name] = value
    where = form.getlist("where")
    if any(isinstance(w, UploadFile) for w in where):
        raise HTTPException(400, "The form field 'where' must be a plain value, not a file.")
    return ImageForm(data, image.filename, **texts, where=tuple(str(w) for w in where))


def decode_upload(data: bytes, limits: ImageLimits, draft: int | None = None):
    """The uploaded bytes as a PIL image, checked against ``limits`` before its pixels are decoded
    (a JPEG at the ``draft`` scale of :func:`mcip.data.images.open_image`, as the indexed images were).

    Raises HTTPException: 415 for a format outside ``limits.formats`` (the message names the accepted
    ones), 400 for an image over a limit or one that does not decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        return open_image(io.BytesIO(data), limits, draft=draft)
    except ImageFormatRefused as exc:
        raise HTTPException(415, str(exc)) from None
    except ImageRefused as exc:
        raise HTTPException(400, str(exc)) from None
    except UnidentifiedImageError:
        raise HTTPException(
            400, f"The upload is not an image (no known format); send a {limits.describe_formats()} image."
        ) from None
    except (*DECODE_ERRORS, Image.DecompressionBombError) as exc:
        raise HTTPException(
            400,
            f"Cannot decode the uploaded image ({type(exc).__name__}: {exc}); send a complete "
            f"{limits.describe_formats()} image.",
        ) from None
