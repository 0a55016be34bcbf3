"""The HTTP API over one :class:`mcip.index.SearchIndex`, and the search page.

Routes: ``GET /search?text=...|id=...&k=``, ``POST /search`` (multipart: ``image`` file, optional ``text``,
``alpha``, ``k``), ``GET /images/{id}``, ``GET /health``, ``/`` (the page), ``/docs`` (OpenAPI). Bad input
gets a 4xx whose JSON ``detail`` says what was wrong: 400 (the index refused the query, an image that does
not decode or is over the image limits, a Host the server does not answer to), 404 (unknown id), 408
(upload too slow), 413 (upload too large), 415 (not multipart, or an image format outside the allow-list),
422 (k or alpha not a number in range), 503 (busy: see Retry-After). Queries run in the server's thread
pool, so one slow model call does not stop the other requests; text and id queries pass one gate
(``query_gate``), uploads another (``upload_gate``: decoded and encoded ``image_concurrency`` at a time), so
uploads never hold a text query's slot. ``HEAD`` on a ``GET`` route answers as ``GET`` without the body.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mcip.data.limits import ImageLimits, default_image_limits
from mcip.data.shard_ref import split_member_ref
from mcip.errors import InputError, require

require("fastapi", "serve", "mcip serve (the HTTP API)")
require("python_multipart", "serve", "Image uploads to mcip serve")

from fastapi import FastAPI, HTTPException, Query, Request  # noqa: E402
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402
from starlette.requests import ClientDisconnect  # noqa: E402

from mcip.index import MAX_K, MAX_TEXT_CHARS, SearchIndex, UnknownId  # noqa: E402
from mcip.index.filters import parse_where  # noqa: E402
from mcip.serve import schemas  # noqa: E402
from mcip.serve.guard import ApiKeys, HeadAsGet, Metrics, MetricsMiddleware, QueryGate  # noqa: E402
from mcip.serve.hosts import HostCheck  # noqa: E402
from mcip.serve.image_search import ImageSearch  # noqa: E402
from mcip.serve.upload import DEFAULT_UPLOAD_TIMEOUT_S, read_image_form  # noqa: E402

STATIC_DIR = Path(__file__).parent / "static"
WHERE_HELP = (
    "metadata filters, repeatable, all must hold: KEY OP VALUE with OP one of =, !=, <, <=, >, >= "
    "(e.g. label=cereal, price<5); KEY is id, path, label or a column of the indexed manifest"
)
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
UPLOADS_WAITING = 16  # uploads that may wait for the upload slot (more: 503 at once)
UPLOAD_QUEUE_TIMEOUT_S = 10.0  # an upload waiting longer for its slot: 503
ERRORS = {
    400: {"model": schemas.Problem, "description": "the query was refused (the detail says why)"},
    404: {"model": schemas.Problem, "description": "no image with this id in the index"},
    401: {"model": schemas.Problem, "description": "an API key is needed (Authorization: Bearer KEY)"},
}
BUSY = {
    503: {
        "model": schemas.Problem,
        "description": "too many queries running and waiting, or no slot in time (see Retry-After)",
    }
}
UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "the query image"},
                        "text": {"type": "string", "description": "optional text mixed with the image"},
                        "alpha": {"type": "number", "default": 0.5, "description": "image weight, 0..1"},
                        "where": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": WHERE_HELP,
                        },
                        "k": {"type": "integer", "default": 10, "minimum": 1, "maximum": MAX_K},
                    },
                }
            }
        },
    }
}


def create_app(
    index: SearchIndex,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    image_limits: ImageLimits | None = None,
    allowed_hosts: Sequence[str] | None = None,
    image_concurrency: int = 1,
    upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S,
    api_keys: Sequence[str] | None = None,
    query_gate: QueryGate | None = None,
    upload_gate: QueryGate | None = None,
) -> FastAPI:
    """The FastAPI application serving ``index``.

    Args:
        index: an open index; its ``search*`` methods are called from several threads at once.
        max_upload_bytes: the largest image accepted by ``POST /search`` (413 beyond; enforced while the
            body is read, so a larger upload is never held in memory).
        image_limits: formats (415 outside), aspect ratio and pixels (400 over) of uploaded images,
            checked before their pixels are decoded; default :func:`mcip.data.limits.default_image_limits`.
        allowed_hosts: the ``Host`` names answered (others: 400); None answers any (``mcip serve``
            passes :func:`mcip.serve.hosts.default_allowed_hosts`).
        image_concurrency: uploads decoded and encoded at once (the model encodes one query at a time
            anyway); the others wait without holding a thread, so N uploads never hold N decoded images.
            Ignored when ``upload_gate`` is given.
        upload_timeout_s: an upload body must arrive within this many seconds (408 after).
        api_keys: when given, every route but the page needs ``Authorization: Bearer KEY`` (401 otherwise;
            :mod:`mcip.serve.guard`).
        query_gate: how many text and id searches run at once, how many may wait and how long (503 with
            Retry-After beyond); default :class:`~mcip.serve.guard.QueryGate` ().
        upload_gate: the same for uploads (``POST /search``), apart, so that text and id queries never
            wait behind them; default ``QueryGate(image_concurrency, UPLOADS_WAITING,
            UPLOAD_QUEUE_TIMEOUT_S)``.
    """
    if max_upload_bytes < 1:
        raise InputError(f"max_upload_bytes must be positive, got {max_upload_bytes}.")
    if image_concurrency < 1 or not upload_timeout_s > 0:
        raise InputError(
            f"image_concurrency and upload_timeout_s must be positive, got {image_concurrency} and "
            f"{upload_timeout_s}."
        )
    limits = image_limits or default_image_limits()
    app = FastAPI(
        title="mcip search",
        summary="Text and image search over one embedding per image (Schall et al., SISAP 2024).",
        version=_version(),
    )
    app.state.index = index
    app.state.max_upload_bytes = max_upload_bytes
    app.add_exception_handler(UnknownId, _problem(404))
    app.add_exception_handler(InputError, _problem(400))
    app.add_exception_handler(ClientDisconnect, _client_gone)
    gate = query_gate or QueryGate()
    uploads = upload_gate or QueryGate(image_concurrency, UPLOADS_WAITING, UPLOAD_QUEUE_TIMEOUT_S)
    metrics = Metrics(gate, uploads)
    app.state.gate, app.state.upload_gate, app.state.metrics = gate, uploads, metrics
    app.add_middleware(HeadAsGet)  # innermost: the key check and the metrics see HEAD
    if api_keys is not None:  # a wrong Host is refused before the key is looked at
        app.add_middleware(ApiKeys, keys=list(api_keys))
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed_hosts=list(allowed_hosts))
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts refusals too
    images = ImageSearch(index, limits)
    _add_search_routes(app, index, max_upload_bytes, images, upload_timeout_s, gate, uploads)
    _add_image_route(app, index)
    _add_page_routes(app, index, max_upload_bytes, limits)

    @app.get("/metrics", include_in_schema=True, response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        """Requests by route and status, latency histograms, queries running / waiting / refused
        (Prometheus text format)."""
        return metrics.response()

    return app


def _version() -> str:
    from mcip import __version__

    return __version__


def _problem(status: int) -> Callable:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """A client that hung up mid-upload: nothing to log (uvicorn drops a reply to a closed connection)."""
    return JSONResponse({"detail": "The client closed the connection during the upload."}, 400)


def _respond(query: schemas.Query, k: int, search: Callable[[], list]) -> schemas.SearchResponse:
    start = time.perf_counter()
    hits = search()
    took_ms = 1000 * (time.perf_counter() - start)
    return schemas.SearchResponse(
        query=query, k=k, took_ms=took_ms, results=[schemas.to_result(h) for h in hits]
    )


def _add_search_routes(
    app: FastAPI,
    index: SearchIndex,
    max_upload_bytes: int,
    images: ImageSearch,
    upload_timeout_s: float,
    gate: QueryGate,
    uploads: QueryGate,
) -> None:
    @app.get("/search", response_model=schemas.SearchResponse, responses=ERRORS | BUSY)
    async def search(
        text: str | None = Query(None, description=f"a text query (1 to {MAX_TEXT_CHARS} characters)"),
        id: str | None = Query(None, description="search with the stored embedding of this indexed image"),
        k: int = Query(10, ge=1, le=MAX_K, description="how many results"),
        where: list[str] | None = Query(None, description=WHERE_HELP),  # noqa: B008
    ) -> schemas.SearchResponse:
        """Images nearest to a text query, or to an indexed image (give exactly one of text, id), among
        the images whose metadata match every ``where`` filter."""
        if (text is None) == (id is None):
            raise HTTPException(400, "Give exactly one of the query parameters text=... or id=....")
        conditions = parse_where(where)  # 400 with the reason before the model runs
        if id is not None:
            query = schemas.Query(id=id, where=where)
            return await gate.run(
                lambda: _respond(query, k, lambda: index.search_by_id(id, k=k, where=conditions))
            )
        query = schemas.Query(text=text, where=where)
        return await gate.run(
            lambda: _respond(query, k, lambda: index.search(text=text, k=k, where=conditions))
        )

    @app.post(
        "/search",
        response_model=schemas.SearchResponse,
        responses=ERRORS
        | BUSY
        | {
            413: {
                "model": schemas.Problem,
                "description": f"upload over the limit ({max_upload_bytes} bytes)",
            },
            408: {"model": schemas.Problem, "description": f"upload slower than {upload_timeout_s:g} s"},
            415: {
                "model": schemas.Problem,
                "description": "the body is not multipart/form-data, or the image is not a "
                f"{images.limits.describe_formats()}",
            },
        },
        openapi_extra=UPLOAD_FORM,
    )
    async def search_image(request: Request) -> schemas.SearchResponse:
        """Images nearest to an uploaded image, or to the image and a text mixed with weight ``alpha``
        on the image: ``normalize(alpha * image + (1 - alpha) * text)``."""
        form = await read_image_form(request, max_upload_bytes, upload_timeout_s)
        k = _number("k", form.k, int, 10, 1, MAX_K)
        text = form.text if form.text not in (None, "") else None
        alpha = _number("alpha", form.alpha, float, 0.5, 0.0, 1.0) if text is not None else None
        conditions = parse_where(list(form.where))
        query = schemas.Query(
            text=text,
            alpha=alpha,
            image=schemas.ImageQuery(filename=form.filename, bytes=len(form.image)),
            where=list(form.where) or None,
        )
        weight = 0.5 if alpha is None else alpha
        return await uploads.run(  # the uploads' own gate: text and id queries never wait behind them
            lambda: _respond(query, k, lambda: images.search(form.image, text, weight, k, conditions))
        )


def _number(name: str, raw: str | None, cast: type, default, low, high):
    """A form field as ``cast`` within [low, high]; 422 with the reason otherwise."""
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise HTTPException(422, f"{name} must be {kind}, got {raw[:40]!r}.") from None
    if not low <= value <= high:  # also refuses NaN
        raise HTTPException(422, f"{name} must be between {low} and {high}, got {raw[:40]}.")
    return value


def _add_image_route(app: FastAPI, index: SearchIndex) -> None:
    @app.get(
        "/images/{image_id:path}",
        response_class=FileResponse,
        responses={200: {"content": {"image/*": {}}}, 404: ERRORS[404]},
    )
    def image(image_id: str) -> Response:
        """The file of an indexed image (or its member of a tar shard, for an index built from shards).
        Only files stored in the index are served: the id is looked up, never joined onto a path."""
        if not index.has(image_id):
            raise HTTPException(404, f"No image with id {image_id!r} in the index.")
        path = Path(index.image_path(image_id))
        if split_member_ref(path) is not None:
            return _shard_member_response(image_id, path)
        if not path.is_file():
            raise HTTPException(404, f"The file of image {image_id!r} is no longer on disk.")
        return FileResponse(path, media_type=media_type(path), headers={"X-Content-Type-Options": "nosniff"})


def _shard_member_response(image_id: str, ref: Path) -> Response:
    """The bytes of an image stored as ``SHARD.tar#KEY`` (:mod:`mcip.data.shard_ref`)."""
    import io

    from PIL import Image

    from mcip.data.images import read_image_bytes, sniff_format

    try:
        data = read_image_bytes(ref)
    except OSError:
        raise HTTPException(404, f"The shard member of image {image_id!r} is no longer readable.") from None
    kind = Image.MIME.get(sniff_format(io.BytesIO(data)) or "") or "application/octet-stream"
    return Response(data, media_type=kind, headers={"X-Content-Type-Options": "nosniff"})


def media_type(path: Path) -> str:
    """The MIME type of an image file from its first bytes (no decoder runs), else from its name."""
    from PIL import Image

    from mcip.data.images import sniff_format

    found = Image.MIME.get(sniff_format(path) or "")
    return found or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _add_page_routes(app: FastAPI, index: SearchIndex, max_upload_bytes: int, limits: ImageLimits) -> None:
    @app.get("/health", response_model=schemas.Health)
    def health() -> schemas.Health:
        """Size and model of the index, and the request limits."""
        info = index.info
        return schemas.Health(
            count=len(index),
            model=str(info.get("model", "")),
            dim=int(info.get("dim", 0)),
            backend=str(info.get("backend", "")),
            limits=schemas.Limits(
                max_upload_bytes=max_upload_bytes,
                max_k=MAX_K,
                max_text_chars=MAX_TEXT_CHARS,
                image_formats=list(limits.formats),
                max_aspect_ratio=limits.max_aspect_ratio,
                max_image_pixels=limits.max_pixels,
            ),
        )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
