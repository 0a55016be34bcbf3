"""Reading an image upload (multipart form) with the size limit enforced while the body streams in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

# Room for the multipart boundaries, part headers and the small text fields next to the image.
FORM_OVERHEAD_BYTES = 64 * 1024
FIELDS = ("image", "text", "alpha", "k")


@dataclass(frozen=True)
class ImageForm:
    """The fields of ``POST /search``: ``image`` is required, the others are optional strings."""

    image: bytes
    filename: str | None
    text: str | None
    alpha: str | None
    k: str | None


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


async def read_image_form(request: Request, max_upload_bytes: int) -> ImageForm:
    """Parse ``multipart/form-data`` with an ``image`` file field, reading at most ``max_upload_bytes``
    (plus the form's own overhead) before giving up with 413; nothing larger is ever buffered.

    Raises HTTPException: 413 too large, 415 not multipart, 400 malformed or without an image.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(
            415,
            "Send the image as multipart/form-data with a file field named 'image' (and optional "
            "'text', 'alpha', 'k'); for text queries use GET /search?text=...",
        )
    limit = max_upload_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(max_upload_bytes)
    parser = MultiPartParser(
        request.headers, _limited(request, limit, max_upload_bytes), max_files=1, max_fields=len(FIELDS)
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"Malformed multipart form: {exc.message}") from exc
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
    return ImageForm(data, image.filename, **texts)
