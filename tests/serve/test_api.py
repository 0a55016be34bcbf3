"""The HTTP API in-process (FastAPI's TestClient) against a real index: every route, answers equal to
``SearchIndex`` called directly."""

from __future__ import annotations

import re

import pytest

from mcip.serve.app import STATIC_DIR
from tests.serve.conftest import COLOURS, COUNT, ODD_NAME, png_bytes, synthetic_image


def hits_json(hits) -> list[tuple]:
    return [(h.rank, h.id, round(h.score, 5)) for h in hits]


def results_json(body) -> list[tuple]:
    return [(r["rank"], r["id"], round(r["score"], 5)) for r in body["results"]]


def test_health_reports_the_index(client, search_index):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["count"] == len(search_index) == COUNT
    assert body["model"] == search_index.info["model"]
    assert body["dim"] == 16
    assert body["backend"] == search_index.info["backend"]
    assert body["limits"]["max_upload_bytes"] == 10 * 2**20


def test_text_search_equals_the_index(client, search_index):
    response = client.get("/search", params={"text": "a red emoji", "k": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["query"]["text"] == "a red emoji" and body["k"] == 7 and body["took_ms"] >= 0
    assert results_json(body) == hits_json(search_index.search(text="a red emoji", k=7))
    first = body["results"][0]
    assert first["label"] == first["id"].split("/")[0] == first["metadata"]["label"]
    assert first["url"] == "/images/" + first["id"].replace("/", "%2F")


def test_id_search_equals_the_index(client, search_index):
    body = client.get("/search", params={"id": "blue/3.png", "k": 5}).json()
    assert body["query"]["id"] == "blue/3.png"
    assert results_json(body) == hits_json(search_index.search_by_id("blue/3.png", k=5))


def test_k_larger_than_the_index_returns_everything(client, search_index):
    body = client.get("/search", params={"text": "a photo", "k": 1000}).json()
    assert len(body["results"]) == len(search_index)
    assert [r["rank"] for r in body["results"]] == list(range(1, len(search_index) + 1))


def test_image_upload_equals_the_index(client, search_index):
    data = png_bytes(synthetic_image(COLOURS["green"], seed=99))
    response = client.post("/search", files={"image": ("query.png", data, "image/png")}, data={"k": "4"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"]["image"] == {"filename": "query.png", "bytes": len(data)}
    assert body["query"]["text"] is None and body["k"] == 4
    assert results_json(body) == hits_json(search_index.search(image=data, k=4))


def test_mixed_text_and_image_equals_the_index(client, search_index):
    data = png_bytes(synthetic_image(COLOURS["yellow"], seed=7))
    form = {"text": "a yellow face", "alpha": "0.3", "k": "6"}
    body = client.post("/search", files={"image": ("q.png", data, "image/png")}, data=form).json()
    assert body["query"]["text"] == "a yellow face" and body["query"]["alpha"] == 0.3
    expected = search_index.search(text="a yellow face", image=data, alpha=0.3, k=6)
    assert results_json(body) == hits_json(expected)


def test_every_result_url_serves_the_indexed_file(client, search_index):
    body = client.get("/search", params={"text": "a photo", "k": 1000}).json()
    for result in body["results"]:
        response = client.get(result["url"])
        assert response.status_code == 200
        path = search_index.image_path(result["id"])
        assert response.content == path.read_bytes()
        expected = "image/jpeg" if path.suffix == ".jpg" else "image/png"
        assert response.headers["content-type"] == expected
        assert response.headers["x-content-type-options"] == "nosniff"


def test_ids_that_need_escaping_round_trip(client, search_index):
    odd = f"yellow/{ODD_NAME}"
    body = client.get("/search", params={"id": odd, "k": 1}).json()
    assert body["results"][0]["id"] == odd
    response = client.get(body["results"][0]["url"])
    assert response.status_code == 200
    assert response.content == search_index.image_path(odd).read_bytes()


def test_image_route_accepts_unencoded_slashes(client, search_index):
    response = client.get("/images/red/1.png")
    assert response.status_code == 200
    assert response.content == search_index.image_path("red/1.png").read_bytes()


def test_page_and_assets_are_served_without_external_resources(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="query-form"' in page.text and 'type="file"' in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    for path in STATIC_DIR.iterdir():  # offline: nothing is fetched from another host
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), path.name


def test_openapi_documents_every_route(client):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {"/search", "/images/{image_id}", "/health"}
    assert set(spec["paths"]["/search"]) == {"get", "post"}
    upload = spec["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["image"]
    assert client.get("/docs").status_code == 200


def test_create_app_refuses_a_non_positive_upload_limit(search_index):
    from mcip.errors import InputError
    from mcip.serve import create_app

    with pytest.raises(InputError, match="max_upload_bytes"):
        create_app(search_index, max_upload_bytes=0)
