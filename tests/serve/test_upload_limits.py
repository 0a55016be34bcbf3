"""Uploads over the image limits: 400 (shape, pixels, resize), 415 (format outside the allow-list), never
a 500, and uploads decoded a bounded number at a time."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from mcip.data.limits import ImageLimits
from mcip.serve import create_app, start_in_thread
from tests.data.image_samples import BOMBS, DISALLOWED_FORMATS, THIN, blank_png, saved_as
from tests.serve.conftest import COLOURS, png_bytes, synthetic_image
from tests.serve.test_bad_input import assert_problem, upload

ALLOWED = "JPEG, PNG, WEBP, GIF, BMP or TIFF"


@pytest.mark.parametrize("size", THIN.values(), ids=THIN.keys())
def test_thin_uploads_get_400(client, size):
    assert_problem(upload(client, blank_png(*size)), 400, "aspect ratio", "over the limit of 50:1")


@pytest.mark.parametrize("size", BOMBS.values(), ids=BOMBS.keys())
def test_decompression_bomb_uploads_get_400(client, size):
    assert_problem(upload(client, blank_png(*size)), 400, "decompression bomb")


@pytest.mark.parametrize("fmt", DISALLOWED_FORMATS)
def test_formats_outside_the_allow_list_get_415(client, fmt):
    assert_problem(upload(client, saved_as(fmt), filename="q.png"), 415, "not accepted", ALLOWED)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_allowed_formats_are_searched(client, fmt):
    response = upload(client, saved_as(fmt, (40, 30)), filename=f"q.{fmt.lower()}")
    assert response.status_code == 200, response.text


def test_health_reports_the_image_limits(client):
    limits = client.get("/health").json()["limits"]
    assert limits["image_formats"] == ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
    assert (limits["max_aspect_ratio"], limits["max_image_pixels"]) == (50.0, 89_478_485)


def test_limits_are_configurable(search_index):
    app = create_app(search_index, image_limits=ImageLimits(max_aspect_ratio=4.0, formats=("PNG",)))
    with TestClient(app) as client:
        assert_problem(upload(client, blank_png(40, 8)), 400, "over the limit of 4:1")
        assert upload(client, blank_png(32, 8)).status_code == 200
        assert_problem(upload(client, saved_as("JPEG"), filename="q.jpg"), 415, "send a PNG image")


@pytest.mark.parametrize("where", ["app", "environment"])
def test_the_resize_limit_gives_400(search_index, monkeypatch, where):
    """The tiny model resizes the shorter side to 36 px: 8 x 32 px becomes 36 x 144 = 5,184 px."""
    if where == "environment":  # what the model's transform checks (SearchIndex, training, builds)
        monkeypatch.setenv("MCIP_MAX_RESIZED_PIXELS", "5000")
        app = create_app(search_index)
    else:
        app = create_app(search_index, image_limits=ImageLimits(max_resized_pixels=5000))
    with TestClient(app) as client:
        assert_problem(upload(client, blank_png(8, 32)), 400, "5,184 px", "max_resized_pixels")
        assert upload(client, blank_png(8, 8)).status_code == 200


class FailingIndex:
    """The real index whose image search fails the way a too-large resize does inside Pillow."""

    def __init__(self, index, error: type[BaseException]) -> None:
        self.index, self.error = index, error

    def __getattr__(self, name):
        return getattr(self.index, name)

    def __len__(self) -> int:
        return len(self.index)

    def search(self, *args, image=None, **kwargs):
        if image is not None:
            raise self.error("resize too large")
        return self.index.search(*args, image=image, **kwargs)


@pytest.mark.parametrize("error", [OverflowError, MemoryError])
def test_resize_errors_are_400_not_500(search_index, error):
    with TestClient(create_app(FailingIndex(search_index, error)), raise_server_exceptions=False) as client:
        data = png_bytes(synthetic_image(COLOURS["red"], seed=1))
        assert_problem(upload(client, data), 400, error.__name__, "scale it down")


class CountingIndex:
    """The real index that records how many searches run at once; each waits a little, or at
    ``barrier`` (which breaks unless that many are inside at the same time)."""

    def __init__(self, index, barrier: threading.Barrier | None = None) -> None:
        self.index, self.barrier, self.inside, self.most = index, barrier, 0, 0
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.index, name)

    def __len__(self) -> int:
        return len(self.index)

    def search(self, *args, **kwargs):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            if self.barrier is not None:
                self.barrier.wait()
            else:
                threading.Event().wait(0.05)
            return self.index.search(*args, **kwargs)
        finally:
            with self.lock:
                self.inside -= 1


@pytest.mark.parametrize("concurrency", [1, 2])
def test_uploads_are_decoded_and_searched_a_bounded_number_at_a_time(search_index, concurrency):
    """Six uploads at once: never more than ``concurrency`` inside (with 2, pairs meet at a barrier, so
    exactly 2 are)."""
    barrier = threading.Barrier(concurrency, timeout=30) if concurrency > 1 else None
    counting = CountingIndex(search_index, barrier)
    image = png_bytes(synthetic_image(COLOURS["green"], seed=3))
    app = create_app(counting, image_concurrency=concurrency)
    with start_in_thread(app) as server, ThreadPoolExecutor(6) as pool:

        def post(_):
            return httpx.post(server.url + "/search", files={"image": ("q.png", image)}, timeout=60)

        statuses = [r.status_code for r in pool.map(post, range(6))]
    assert statuses == [200] * 6
    assert counting.most == concurrency


def test_an_upload_slower_than_the_timeout_gets_408():
    """The body stops arriving after its first chunk: the form reader gives up after ``timeout_s``."""
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    from mcip.serve.upload import read_image_form

    calls = []

    async def receive():
        calls.append(1)
        if len(calls) > 1:
            await asyncio.Event().wait()  # a client that never sends the rest
        body = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n\x89PNG'
        return {"type": "http.request", "body": body, "more_body": True}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/search",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b")],
    }
    with pytest.raises(HTTPException) as caught:
        asyncio.run(read_image_form(Request(scope, receive), max_upload_bytes=100_000, timeout_s=0.2))
    assert caught.value.status_code == 408 and "0.2 s" in caught.value.detail


def test_bytes_in_no_known_format_get_400_naming_the_formats(client):
    assert_problem(upload(client, b"plain text, not an image"), 400, "not an image", ALLOWED)
