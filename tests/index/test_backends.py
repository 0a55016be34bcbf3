"""FAISS factory strings on small data, and Qdrant (local mode; a server simulated on disk) against FAISS Flat."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from mcip.index import (
    SearchIndex,
    add_to_index,
    build_index,
    create_backend,
    index_embeddings,
    list_index_backends,
)
from mcip.index.backends.base import Backend
from tests.index.helpers import top_k, unit, write_pngs


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    return unit(centres[rng.integers(0, 20, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def vectors_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("vec")
    paths = write_pngs(root / "img", [f"{i:04d}.png" for i in range(600)], size=4)
    return _clustered(600, 32), root / "img", [p.name for p in paths]


def _recall_at_10(index: SearchIndex, vectors: np.ndarray, queries: np.ndarray) -> float:
    exact = vectors.astype(np.float16).astype(np.float32)
    found = 0
    for q in queries:
        truth = {index.ids[r] for r in top_k(exact, q, 10)[0]}
        found += len(truth & {h.id for h in index.search_vector(q, k=10)})
    return found / (10 * len(queries))


@pytest.mark.parametrize(
    ("factory", "min_recall"),
    [("Flat", 1.0), ("HNSW32", 0.95), ("IVF16,Flat", 0.9), ("IVF8,PQ8x4", 0.3), ("IVF8,PQ8x4,RFlat", 0.9)],
)
def test_factory_strings_on_small_data(vectors_and_images, tmp_path, factory, min_recall):
    vectors, images, _ = vectors_and_images
    params = {"search_params": "nprobe=8,k_factor_rf=8"} if "RFlat" in factory else {}
    index_embeddings(vectors, images, tmp_path / "index", factory=factory, **params)
    with SearchIndex.open(tmp_path / "index", load_model=False) as index:
        assert index.info["factory"] == factory and len(index) == 600
        assert _recall_at_10(index, vectors, vectors[::30]) >= min_recall


def test_ivf_defaults_probe_enough_lists_and_params_can_be_overridden(vectors_and_images, tmp_path):
    vectors, images, _ = vectors_and_images
    index_embeddings(vectors, images, tmp_path / "index", factory="IVF16,Flat")
    with SearchIndex.open(tmp_path / "index", load_model=False) as index:  # default nprobe = 8 of 16
        assert _recall_at_10(index, vectors, vectors[::30]) >= 0.9
    options = {"search_params": "nprobe=16"}
    with SearchIndex.open(tmp_path / "index", load_model=False, backend_options=options) as index:
        assert _recall_at_10(index, vectors, vectors[::30]) == 1.0  # every list probed: exact


def test_hnsw_through_images(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "flat", progress=False)
    build_index(model_dir, photos, tmp_path / "hnsw", factory="HNSW32", progress=False)
    with SearchIndex.open(tmp_path / "flat") as flat, SearchIndex.open(tmp_path / "hnsw") as hnsw:
        for text in ("a cat", "red car"):
            assert [h.id for h in hnsw.search(text=text, k=5)] == [h.id for h in flat.search(text=text, k=5)]


def test_registry_lists_backends_and_every_backend_implements_the_interface():
    assert list_index_backends() == ["faiss", "qdrant"]
    for name in list_index_backends():
        assert isinstance(create_backend(name), Backend)


# ----------------------------------------------------------------- Qdrant

# Only the Qdrant tests need qdrant-client: a module-level importorskip would skip the FAISS ones too.
needs_qdrant = pytest.mark.skipif(
    importlib.util.find_spec("qdrant_client") is None,
    reason="qdrant-client is not installed (pip install 'mcip[qdrant]')",
)


@needs_qdrant
def test_qdrant_local_mode_matches_faiss_flat(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "faiss", progress=False)
    build_index(model_dir, photos, tmp_path / "qdrant", backend="qdrant", progress=False)
    assert (tmp_path / "qdrant" / "qdrant").is_dir()
    with SearchIndex.open(tmp_path / "faiss") as f, SearchIndex.open(tmp_path / "qdrant") as q:
        assert q.info["backend"] == "qdrant" and q.info["factory"] is None
        for kwargs in ({"text": "a blue bird"}, {"image": photos / "red" / "1.png"}):
            fh, qh = f.search(**kwargs, k=8), q.search(**kwargs, k=8)
            assert [h.id for h in qh] == [h.id for h in fh]
            np.testing.assert_allclose([h.score for h in qh], [h.score for h in fh], rtol=1e-5, atol=1e-6)
        assert [h.id for h in q.search_by_id("blue/4.png", k=3, exclude_self=True)] == [
            h.id for h in f.search_by_id("blue/4.png", k=3, exclude_self=True)
        ]
    write_pngs(photos, ["green/0.png", "green/1.png"], seed=11)
    for name in ("faiss", "qdrant"):
        assert add_to_index(tmp_path / name, photos, progress=False)["count"] == 18
    with SearchIndex.open(tmp_path / "faiss") as f, SearchIndex.open(tmp_path / "qdrant") as q:
        assert [h.id for h in q.search(text="green", k=18)] == [h.id for h in f.search(text="green", k=18)]


@needs_qdrant
def test_qdrant_server_mode_swaps_an_alias_and_never_stores_the_api_key(
    model_dir, photos, tmp_path, monkeypatch
):
    from qdrant_client import QdrantClient

    from mcip.index.backends import qdrant_backend

    seen = []

    def connect(url, api_key, prefer_grpc, timeout):  # a "server" kept on disk, one client at a time
        seen.append((url, api_key))
        return QdrantClient(path=str(tmp_path / "server"))

    monkeypatch.setattr(qdrant_backend, "connect", connect)
    options = {"url": "http://qdrant:6333", "api_key": "s3cret", "collection": "photos"}
    build_index(model_dir, photos, tmp_path / "index", backend="qdrant", progress=False, **options)
    manifest_text = (tmp_path / "index" / "manifest.json").read_text()
    assert "s3cret" not in manifest_text and not (tmp_path / "index" / "qdrant").exists()
    first = json.loads(manifest_text)["backend_state"]["physical_collection"]
    assert first.startswith("photos-") and seen[0] == ("http://qdrant:6333", "s3cret")

    monkeypatch.setenv("QDRANT_API_KEY", "from-env")
    with SearchIndex.open(tmp_path / "index") as index:
        assert len(index.search(text="a cat", k=20)) == 16
    assert seen[-1] == ("http://qdrant:6333", "from-env")

    build_index(model_dir, photos, tmp_path / "index", backend="qdrant", progress=False, **options)
    second = json.loads((tmp_path / "index" / "manifest.json").read_text())["backend_state"][
        "physical_collection"
    ]
    client = QdrantClient(path=str(tmp_path / "server"))
    try:
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        names = {c.name for c in client.get_collections().collections}
    finally:
        client.close()
    assert aliases == {"photos": second} and names == {second} and second != first


@needs_qdrant
def test_qdrant_rows_of_a_crashed_add_are_ignored(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "index", backend="qdrant", progress=False)
    with SearchIndex.open(tmp_path / "index") as index:
        backend = index._backend
        backend.limit = 10  # as if rows 10..15 were points uploaded by an add that never swapped in
        hits = index.search(text="a cat", k=16)
    assert len(hits) == 10 and all(index.ids.index(h.id) < 10 for h in hits)
