"""Metadata filters (``--where``): parsing, per-row semantics, and search results equal to a brute-force
filter-then-rank reference for FAISS (Flat, IVF at full probe, HNSW) and Qdrant; the CLI and the HTTP API
pass them through."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest

from mcip.errors import InputError
from mcip.index import SearchIndex, build_index
from mcip.index.filters import Condition, parse_where
from tests.index.helpers import unit, write_pngs

SHOPS = ("north", "south", "east")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """48 images with label, price (numbers, one text, one missing) and shop columns."""
    root = tmp_path_factory.mktemp("filters")
    names = [f"img/{i}.png" for i in range(48)]
    write_pngs(root, names, seed=3)
    rows = []
    for i, name in enumerate(names):
        price = "" if i == 5 else ("cheap" if i == 6 else f"{(i * 7) % 20 + 0.5}")
        rows.append(
            {
                "path": name,
                "label": ("cereal", "milk", "tea")[i % 3],
                "price": price,
                "shop": SHOPS[i % 3 if i % 4 else 0],
            }
        )
    manifest = root / "catalogue.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _reference(index: SearchIndex, query: np.ndarray, k: int, conditions) -> list[str]:
    """Naive: every record checked by hand against every condition, then ranked by the stored vectors."""
    keep = []
    for row, record in enumerate(index.iter_records()):
        fields = {"id": record.id, "path": str(record.path), **record.metadata()}
        if all(
            c.key in fields and fields[c.key] not in (None, "") and c.matches(fields[c.key])
            for c in conditions
        ):
            keep.append(row)
    scores = index.embeddings[keep].astype(np.float32) @ query
    order = np.lexsort((np.asarray(keep), -scores))[:k]
    return [index.ids[keep[i]] for i in order]


WHERES = [
    ["label=cereal"],
    ["price<5"],
    ["label=milk", "price>=3.5"],
    ["shop!=north"],
    ["price=7.5"],
    ["label=nothing"],
]


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_faiss_filtered_search_equals_filter_then_rank(model_dir, catalogue, tmp_path, factory):
    options = {"search_params": "nprobe=4"} if factory.startswith("IVF") else {}
    build_index(model_dir, catalogue, tmp_path / "i", factory=factory, progress=False, **options)
    rng = np.random.default_rng(0)
    with SearchIndex.open(tmp_path / "i", load_model=False) as index:
        for where in WHERES:
            conditions = parse_where(where)
            for _ in range(3):
                q = unit(rng.normal(size=index.dim)).astype(np.float32)
                got = [h.id for h in index.search_vector(q, k=5, where=where)]
                assert got == _reference(index, q, 5, conditions), where


def test_hnsw_filtered_search_returns_only_matching_rows_in_score_order(model_dir, catalogue, tmp_path):
    build_index(model_dir, catalogue, tmp_path / "i", factory="HNSW8", progress=False)
    with SearchIndex.open(tmp_path / "i", load_model=False) as index:
        q = unit(np.random.default_rng(1).normal(size=index.dim)).astype(np.float32)
        hits = index.search_vector(q, k=10, where=["label=tea"])
        assert hits and all(h.metadata["label"] == "tea" for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert [h.id for h in hits] == _reference(index, q, 10, parse_where(["label=tea"]))  # 16 rows: exact


@pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None, reason="qdrant-client not installed")
def test_qdrant_filtered_search_equals_filter_then_rank(model_dir, catalogue, tmp_path):
    build_index(model_dir, catalogue, tmp_path / "q", backend="qdrant", progress=False)
    with SearchIndex.open(tmp_path / "q", load_model=False) as index:
        q = unit(np.random.default_rng(2).normal(size=index.dim)).astype(np.float32)
        for where in WHERES:
            got = [h.id for h in index.search_vector(q, k=5, where=where)]
            assert got == _reference(index, q, 5, parse_where(where)), where


def test_filter_semantics_per_row():
    price_lt = Condition("price", "<", "5")
    assert price_lt.matches("4.5") and price_lt.matches(3) and not price_lt.matches("cheap")
    assert not price_lt.matches(None)
    assert Condition("price", "=", "5").matches(5.0)  # numbers compare as numbers
    assert Condition("label", "=", "cereal").matches("cereal") and not Condition(
        "label", "=", "Cereal"
    ).matches("cereal")
    captions = ["a red box", "cereal"]
    assert Condition("captions", "=", "cereal").matches(captions)
    assert not Condition("captions", "!=", "cereal").matches(captions)
    assert Condition("captions", "!=", "tea").matches(captions)


@pytest.mark.parametrize("bad", ["price", "=5", "price<cheap", "price<", "a b=1", "x" * 2000])
def test_malformed_filters_say_what_a_filter_looks_like(bad):
    with pytest.raises(InputError, match=r"KEY OP VALUE|number|at most"):
        parse_where([bad])


def test_search_by_id_and_exclusion_respect_the_filter(model_dir, catalogue, tmp_path):
    build_index(model_dir, catalogue, tmp_path / "i", progress=False)
    with SearchIndex.open(tmp_path / "i", load_model=False) as index:
        first = index.ids[0]  # label cereal
        hits = index.search_by_id(first, k=50, exclude_self=True, where=["label=cereal"])
        assert first not in [h.id for h in hits] and len(hits) == 15
        assert all(h.metadata["label"] == "cereal" for h in hits)
        assert index.search_by_id(first, k=3, where=["label=milk"])[0].metadata["label"] == "milk"
        assert index.search_by_id(first, k=3, where=["label=nothing"]) == []


def test_cli_and_http_pass_filters_through(model_dir, catalogue, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from mcip.cli import main
    from mcip.serve import create_app

    build_index(model_dir, catalogue, tmp_path / "i", progress=False)
    args = ["search", "--index", str(tmp_path / "i"), "--text", "a box", "--k", "4", "--json"]
    assert main([*args, "--where", "label=milk", "--where", "price<10"]) == 0
    cli_hits = json.loads(capsys.readouterr().out)
    assert cli_hits and all(
        h["metadata"]["label"] == "milk" and float(h["metadata"]["price"]) < 10 for h in cli_hits
    )
    assert main([*args, "--where", "price<cheap"]) == 2
    with SearchIndex.open(tmp_path / "i") as index:
        expected = [h.id for h in index.search(text="a box", k=4, where=["label=milk", "price<10"])]
        assert [h["id"] for h in cli_hits] == expected
        with TestClient(create_app(index)) as client:
            got = client.get("/search", params={"text": "a box", "k": 4, "where": ["label=milk", "price<10"]})
            assert got.status_code == 200 and [r["id"] for r in got.json()["results"]] == expected
            assert got.json()["query"]["where"] == ["label=milk", "price<10"]
            assert client.get("/search", params={"text": "a", "where": "price<<3"}).status_code == 400
            image = (catalogue.parent / "img" / "0.png").read_bytes()
            posted = client.post(
                "/search",
                files={"image": ("0.png", image, "image/png")},
                data={"where": ["label=tea"], "k": "3"},
            )
            assert posted.status_code == 200 and {
                r["metadata"]["label"] for r in posted.json()["results"]
            } == {"tea"}
            assert "where" in json.dumps(client.get("/openapi.json").json()["paths"]["/search"])
