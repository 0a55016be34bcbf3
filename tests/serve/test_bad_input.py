"""Bad requests get a 4xx whose JSON ``detail`` says why, never a 500, and no request reads a file that
is not in the index."""

from __future__ import annotations

import asyncio
import io
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from mcip.index import MAX_K, MAX_TEXT_CHARS
from mcip.serve.upload import FORM_OVERHEAD_BYTES
from tests.serve.conftest import COLOURS, png_bytes, synthetic_image


def assert_problem(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    text = detail if isinstance(detail, str) else " ".join(d["msg"] for d in detail)
    for word in words:
        assert word.lower() in text.lower(), text


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({}, 400, ["exactly one", "text", "id"]),
        ({"text": "a cat", "id": "red/1.png"}, 400, ["exactly one"]),
        ({"text": ""}, 400, ["empty"]),
        ({"text": "   \n\t "}, 400, ["empty"]),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, 400, [str(MAX_TEXT_CHARS)]),
        ({"text": "a cat", "k": 0}, 422, ["greater than or equal to 1"]),
        ({"text": "a cat", "k": MAX_K + 1}, 422, [f"less than or equal to {MAX_K}"]),
        ({"text": "a cat", "k": "ten"}, 422, ["integer"]),
        ({"text": "a cat", "k": -3}, 422, ["greater than"]),
        ({"id": "no/such/image.png"}, 404, ["no/such/image.png"]),
        ({"id": ""}, 404, []),
    ],
)
def test_bad_get_search(client, params, status, words):
    assert_problem(client.get("/search", params=params), status, *words)


def upload(client, data: bytes, filename="q.png", form=None, content_type="image/png"):
    return client.post("/search", files={"image": (filename, data, content_type)}, data=form or {})


def test_non_image_upload(client):
    assert_problem(upload(client, b"%PDF-1.4 not an image at all", "doc.pdf"), 400, "image")


def test_truncated_image_upload(client):
    data = png_bytes(synthetic_image(COLOURS["red"], seed=1, size=256))
    assert_problem(upload(client, data[: len(data) // 2]), 400, "image")


def test_empty_upload(client):
    assert_problem(upload(client, b""), 400, "empty")


def test_decompression_bomb_upload(client):
    """A tiny PNG that claims 40,000 x 40,000 pixels is refused before its pixels are decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (40_000, 40_000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 1_000_000
    assert upload(client, buf.getvalue()).status_code == 400


@pytest.mark.parametrize(
    ("form", "status", "words"),
    [
        ({"k": "0"}, 422, ["k must be between 1"]),
        ({"k": str(MAX_K + 1)}, 422, ["k must be between"]),
        ({"k": "many"}, 422, ["k must be an integer"]),
        ({"text": "a cat", "alpha": "1.5"}, 422, ["alpha must be between 0"]),
        ({"text": "a cat", "alpha": "nan"}, 422, ["alpha"]),
        ({"text": "a cat", "alpha": "half"}, 422, ["alpha must be a number"]),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, 400, [str(MAX_TEXT_CHARS)]),
        ({"text": "   "}, 400, ["empty"]),
        ({"colour": "red"}, 400, ["unknown form field", "colour"]),
    ],
)
def test_bad_upload_fields(client, form, status, words):
    data = png_bytes(synthetic_image(COLOURS["blue"], seed=3))
    assert_problem(upload(client, data, form=form), status, *words)


def test_upload_without_an_image_field(client):
    response = client.post("/search", files={"picture": ("q.png", b"x", "image/png")})
    assert_problem(response, 400, "picture")
    response = client.post("/search", files={"text": (None, "a cat")})
    assert_problem(response, 400, "no file field named 'image'")


def test_upload_that_is_not_multipart(client):
    assert_problem(client.post("/search", json={"text": "a cat"}), 415, "multipart/form-data")
    assert_problem(client.post("/search", content=b"\x89PNG..."), 415, "multipart")


def test_malformed_multipart(client):
    headers = {"content-type": "multipart/form-data"}  # no boundary
    assert_problem(client.post("/search", content=b"--x\r\n", headers=headers), 400, "multipart")


def test_two_images_are_refused(client):
    data = png_bytes(synthetic_image(COLOURS["red"], seed=1))
    files = [("image", ("a.png", data, "image/png")), ("image", ("b.png", data, "image/png"))]
    assert_problem(client.post("/search", files=files), 400, "files")


@pytest.fixture(scope="module")
def small_limit_client(search_index):
    from mcip.serve import create_app

    with TestClient(create_app(search_index, max_upload_bytes=2000)) as client:
        yield client


def test_oversized_upload_is_refused(small_limit_client):
    data = png_bytes(synthetic_image(COLOURS["red"], seed=1, size=128))
    assert 2000 < len(data) < 2000 + FORM_OVERHEAD_BYTES  # read whole, then refused by the part's size
    assert_problem(upload(small_limit_client, data), 413, "limit", "2 KiB")
    small = png_bytes(synthetic_image(COLOURS["red"], seed=1, size=16))
    assert len(small) < 2000
    assert upload(small_limit_client, small).status_code == 200


def test_oversized_upload_without_content_length_is_refused(small_limit_client):
    data = png_bytes(synthetic_image(COLOURS["red"], seed=1, size=512))
    boundary = "mcipboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))  # chunked: no Content-Length
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert_problem(small_limit_client.post("/search", content=chunks, headers=headers), 413, "limit")


def test_upload_limit_is_enforced_while_reading():
    """The body stops being read once it passes the limit: a 100 MB upload is never buffered."""
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    from mcip.serve.upload import read_image_form

    total_chunks, pulled = 1600, []
    prefix = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'

    async def receive():  # an endless image part, 64 KiB at a time
        pulled.append(1)
        body = prefix if len(pulled) == 1 else b"\0" * 65536
        return {"type": "http.request", "body": body, "more_body": len(pulled) < total_chunks}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/search",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b")],
    }
    with pytest.raises(HTTPException) as caught:
        asyncio.run(read_image_form(Request(scope, receive), max_upload_bytes=100_000))
    assert caught.value.status_code == 413
    assert len(pulled) <= (100_000 + FORM_OVERHEAD_BYTES) // 65536 + 2 < total_chunks


def test_declared_oversized_body_is_refused_before_reading(small_limit_client):
    headers = {"content-type": "multipart/form-data; boundary=b", "content-length": str(10**9)}
    assert_problem(small_limit_client.post("/search", content=b"", headers=headers), 413, "limit")


@pytest.mark.parametrize(
    "path",
    [
        "/images/no-such-id.png",
        "/images/notes.txt",  # in the image folder, but not indexed
        "/images/../secret.txt",
        "/images/..%2Fsecret.txt",
        "/images/%2E%2E%2Fsecret.txt",
        "/images/red%2F..%2F..%2Fsecret.txt",
        "/images/red/../../secret.txt",
        "/images/..%5C..%5Csecret.txt",
        "/images/%2Fetc%2Fpasswd",
        "/images//etc/passwd",
        "/images/red/1.png%00.txt",
        "/images/red/1.png/..",
    ],
)
def test_image_route_serves_only_indexed_ids(client, path):
    response = client.get(path)
    assert response.status_code == 404, path
    assert b"outside the indexed collection" not in response.content
    assert b"root:" not in response.content


def test_absolute_path_of_an_indexed_file_is_not_an_id(client, search_index):
    path = search_index.image_path("red/1.png")
    response = client.get("/images/" + quote(str(path), safe=""))
    assert_problem(response, 404, "no image with id")
