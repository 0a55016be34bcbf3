"""The JSON the HTTP API sends (pydantic models: they validate the responses and document them in /docs)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field


class ImageQuery(BaseModel):
    filename: str | None = Field(None, description="the uploaded file's name, as the client sent it")
    bytes: int = Field(description="size of the upload")


class Query(BaseModel):
    """What was searched for (echoed back): text, an indexed image's id, an uploaded image, or text and
    image mixed with weight ``alpha`` on the image."""

    text: str | None = None
    id: str | None = None
    image: ImageQuery | None = None
    alpha: float | None = None
    where: list[str] | None = None


class Result(BaseModel):
    rank: int = Field(description="1-based")
    id: str = Field(description="the image's id in the index")
    score: float = Field(description="cosine similarity to the query (higher is closer)")
    label: str | None = Field(None, description="the image's label, when the index stores one")
    url: str = Field(description="where the image file is served: /images/{id}")
    metadata: dict[str, Any] = Field(default_factory=dict, description="fields stored with the image")


class SearchResponse(BaseModel):
    query: Query
    k: int
    took_ms: float = Field(description="time spent in the index (encoding the query and searching)")
    results: list[Result]


class Limits(BaseModel):
    max_upload_bytes: int
    max_k: int
    max_text_chars: int
    image_formats: list[str] = Field(description="the image formats POST /search accepts (415 otherwise)")
    max_aspect_ratio: float = Field(description="longer / shorter side of an uploaded image (400 over)")
    max_image_pixels: int = Field(description="width x height of an uploaded image (400 over)")


class Health(BaseModel):
    status: str = "ok"
    count: int = Field(description="images in the index")
    model: str = Field(description="the model spec the index was built with")
    dim: int = Field(description="embedding width D")
    backend: str
    limits: Limits


class Problem(BaseModel):
    detail: str = Field(description="what was wrong with the request")


def image_url(image_id: str) -> str:
    """``/images/{id}`` with the id percent-encoded as one path segment (slashes included, so that a
    browser never resolves ``..`` inside an id)."""
    return "/images/" + quote(image_id, safe="")


def to_result(hit) -> Result:
    """A :class:`mcip.index.Hit` as the API's result object."""
    metadata = dict(hit.metadata or {})
    label = metadata.get("label")
    return Result(
        rank=hit.rank,
        id=hit.id,
        score=float(hit.score),
        label=None if label is None else str(label),
        url=image_url(hit.id),
        metadata=metadata,
    )
