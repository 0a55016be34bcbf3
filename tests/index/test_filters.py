"""Metadata filters (``--where``): parsing, per-row semantics, and search results equal to a brute-force
filter-then-rank reference for FAISS (Flat, IVF at full probe, HNSW) and Qdrant; the CLI and the HTTP API
pass them through."""

from __future__ import annotations

import csv
import importlib.util
import json
import time

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


# The rows of the catalogue each filter matches, written by hand from how the catalogue is made (label: i % 3;
# price: (7i mod 20) + 0.5, text "cheap" at 6, empty at 5, so the column is text; shop: north where 4 or 3
# divides i). They never come from the code under test.
WHERES = {
    ("label=cereal",): set(range(0, 48, 3)),
    ("price<5",): {0, 3, 9, 12, 20, 23, 26, 29, 32, 40, 43, 46},  # 7i mod 20 < 5: i mod 20 in 0, 3, 6, 9, 12
    ("label=milk", "price>=3.5"): {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 37},  # milk but 40, 43, 46
    ("shop!=north",): {i for i in range(48) if i % 4 and i % 3},
    ("price=7.5",): {1, 21, 41},  # 7i mod 20 = 7
    ("label=nothing",): set(),
}


def _reference(index: SearchIndex, query: np.ndarray, k: int, rows: set[int]) -> list[str]:
    """Naive: rank the hand-written matching ``rows`` (catalogue order = index order) by the stored vectors."""
    keep = sorted(rows)
    scores = index.embeddings[keep].astype(np.float32) @ query
    order = np.lexsort((np.asarray(keep, dtype=np.int64), -scores))[:k]
    return [index.ids[keep[i]] for i in order]


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_faiss_filtered_search_equals_filter_then_rank(model_dir, catalogue, tmp_path, factory):
    options = {"search_params": "nprobe=4"} if factory.startswith("IVF") else {}
    build_index(model_dir, catalogue, tmp_path / "i", factory=factory, progress=False, **options)
    rng = np.random.default_rng(0)
    with SearchIndex.open(tmp_path / "i", load_model=False) as index:
        assert index.ids == [f"img/{i}.png" for i in range(48)]
        for where, rows in WHERES.items():
            assert index.filter_rows(list(where)).tolist() == sorted(rows), where
            for _ in range(3):
                q = unit(rng.normal(size=index.dim)).astype(np.float32)
                got = [h.id for h in index.search_vector(q, k=5, where=list(where))]
                assert got == _reference(index, q, 5, rows), where


def test_hnsw_filtered_search_returns_only_matching_rows_in_score_order(model_dir, catalogue, tmp_path):
    build_index(model_dir, catalogue, tmp_path / "i", factory="HNSW8", progress=False)
    with SearchIndex.open(tmp_path / "i", load_model=False) as index:
        q = unit(np.random.default_rng(1).normal(size=index.dim)).astype(np.float32)
        hits = index.search_vector(q, k=10, where=["label=tea"])
        assert hits and all(h.metadata["label"] == "tea" for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert [h.id for h in hits] == _reference(index, q, 10, set(range(2, 48, 3)))  # 16 rows: exact


@pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None, reason="qdrant-client not installed")
def test_qdrant_filtered_search_equals_filter_then_rank(model_dir, catalogue, tmp_path):
    build_index(model_dir, catalogue, tmp_path / "q", backend="qdrant", progress=False)
    with SearchIndex.open(tmp_path / "q", load_model=False) as index:
        q = unit(np.random.default_rng(2).normal(size=index.dim)).astype(np.float32)
        for where, rows in WHERES.items():
            got = [h.id for h in index.search_vector(q, k=5, where=list(where))]
            assert got == _reference(index, q, 5, rows), where


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


def _typed_index(tmp_path, name: str, text: str) -> SearchIndex:
    """An index (random vectors, no model) of the manifest ``text`` written as ``tmp_path/name``."""
    from mcip.index import index_embeddings

    manifest = tmp_path / name
    manifest.write_text(text, encoding="utf-8")
    n = len([line for line in text.splitlines() if line.strip()]) - name.endswith(".csv")
    vectors = unit(np.random.default_rng(0).normal(size=(n, 8))).astype(np.float32)
    index_embeddings(vectors, manifest, tmp_path / f"{name}.index")
    return SearchIndex.open(tmp_path / f"{name}.index", load_model=False)


def _matching(index: SearchIndex, where: str) -> set[str]:
    return {index.ids[r] for r in index.filter_rows([where]).tolist()}


JSONL_ROWS = [
    {"id": "r0", "sku": 12345678901234567, "flag": True, "code": "1", "opt": "", "price": 5},
    {"id": "r1", "sku": 12345678901234568, "flag": False, "code": "01", "opt": "x", "price": 5.0},
    {"id": "r2", "sku": 12345678901234569, "flag": "true", "code": "1.0", "price": 4.5},
    {"id": "r3", "sku": "12345678901234567", "flag": None, "code": "1e0", "opt": None},
    {"id": "r4", "flag": 1, "code": " 1", "price": "5"},
]
# Written by hand from JSONL_ROWS and the rules of mcip.index.filters (int exact, bool as bool, str as str).
JSONL_EXPECTED = {
    "sku=12345678901234567": {"r0", "r3"},  # r3 holds the same digits as text
    "sku=12345678901234568": {"r1"},
    "sku>12345678901234567": {"r1", "r2"},  # r3's text is not greater
    "flag=true": {"r0", "r2"},  # r2: the text "true"
    "flag=TRUE": {"r0"},
    "flag!=false": {"r0", "r2", "r4"},  # never r1 (false), never r3 (null)
    "flag=1": {"r4"},  # a boolean is not a number
    "code=1": {"r0"},  # not 01, 1.0, 1e0 or " 1"
    "opt=": {"r0"},
    "opt!=": {"r1"},
    "price=5": {"r0", "r1", "r4"},  # 5, 5.0 and the text "5"
    "price<5": {"r2"},
    "price>=5": {"r0", "r1", "r4"},
}


@pytest.mark.parametrize(("where", "expected"), JSONL_EXPECTED.items())
def test_jsonl_values_compare_by_their_type(tmp_path, where, expected):
    rows = [{"path": f"{r['id']}.png", **{k: v for k, v in r.items()}} for r in JSONL_ROWS]
    with _typed_index(tmp_path, "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows)) as index:
        assert _matching(index, where) == expected


CSV = """path,id,sku,flag,code,price:float,zip:str,mixed,note
c0.png,c0,12345678901234567,TRUE,01,5,01234,1,a
c1.png,c1,12345678901234568,false,1,4.50,99999,abc,
c2.png,c2,,,,,,,
"""
# Inferred: sku int, flag bool, code str (01 is not an integer written plainly), mixed str, note str;
# declared: price float, zip str. Empty cells: null in typed columns, "" in text ones.
CSV_EXPECTED = {
    "sku=12345678901234567": {"c0"},
    "sku!=12345678901234567": {"c1"},  # c2 has no sku
    "flag=true": {"c0"},
    "flag=false": {"c1"},
    "flag=": set(),
    "code=1": {"c1"},
    "code=01": {"c0"},
    "code=": {"c2"},
    "price=5": {"c0"},
    "price=4.5": {"c1"},
    "price<5": {"c1"},
    "zip=01234": {"c0"},
    "zip=1234": set(),
    "mixed=1": {"c0"},
    "note=": {"c1", "c2"},
}


@pytest.mark.parametrize(("where", "expected"), CSV_EXPECTED.items())
def test_csv_columns_are_typed_by_declaration_or_inference(tmp_path, where, expected):
    with _typed_index(tmp_path, "m.csv", CSV) as index:
        assert _matching(index, where) == expected


def test_csv_values_are_stored_with_their_column_type(tmp_path):
    with _typed_index(tmp_path, "m.csv", CSV) as index:
        c0, c2 = index.record("c0").metadata, index.record("c2").metadata
    assert c0["sku"] == 12345678901234567 and type(c0["sku"]) is int
    assert c0["flag"] is True and c0["price"] == 5.0 and type(c0["price"]) is float
    assert c0["zip"] == "01234" and c0["code"] == "01" and c0["mixed"] == "1"
    assert c2["sku"] is None and c2["flag"] is None and c2["code"] == "" and "price:float" not in c0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,n:int\na.png,1\nb.png,1.5\n", r"row 2, column n: '1.5' does not read as int"),
        ("path,f:bool\na.png,yes\n", r"row 1, column f: 'yes' does not read as bool"),
        ("path,n,n:int\na.png,1,2\n", "same name"),
    ],
)
def test_csv_cells_that_break_a_declared_type_are_refused(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        _typed_index(tmp_path, "bad.csv", text)


class _SlowDict(dict):
    """The filter cache with a slow ``iter`` (how its oldest entry is found), so that other threads run
    between a thread's choice of the entry to evict and its eviction."""

    def __iter__(self):
        keys = list(super().__iter__())
        time.sleep(0.001)
        return iter(keys)


def test_concurrent_filtered_queries_share_the_filter_cache_safely(
    model_dir, catalogue, tmp_path, monkeypatch
):
    """Server threads run filtered queries at once; with a cache of 2 expression sets and 8 sets in use, every
    query evicts. Before the cache had a lock, two threads evicting the same entry raised (KeyError,
    StopIteration on an emptied cache: a 500)."""
    from concurrent.futures import ThreadPoolExecutor

    import mcip.index.search as search

    monkeypatch.setattr(search, "FILTER_CACHE", 2)
    build_index(model_dir, catalogue, tmp_path / "i", progress=False)
    wheres = [*WHERES, ("price>=1",), ("price>=2",)]
    expected = {w: sorted(rows) for w, rows in WHERES.items()}
    expected[("price>=1",)] = sorted(set(range(48)) - {5, 6, 0, 20, 40})  # not 0.5, empty or text
    expected[("price>=2",)] = sorted(set(expected[("price>=1",)]) - {3, 23, 43})  # nor 1.5
    with SearchIndex.open(tmp_path / "i", load_model=False) as index:
        index._filters = _SlowDict()

        def work(t: int) -> int:
            wrong = 0
            for j in range(100):
                where = wheres[(t + j) % len(wheres)]
                wrong += index.filter_rows(list(where)).tolist() != expected[where]
            return wrong

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(work, range(8))) == 0


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
