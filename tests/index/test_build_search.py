"""Build an index from images, query it by text, image, both, vector and id; against exact references."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from mcip.data.images import open_image
from mcip.errors import ConfigError
from mcip.index import IndexedImage, SearchIndex, UnknownId, build_index, index_embeddings, index_info
from tests.index.helpers import top_k, unit, write_pngs

QUERIES = ["a photo of a dog", "red apple", "a small blue car", "two birds in a tree"]


@pytest.fixture
def index_dir(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "index", batch_size=4, progress=False)
    return tmp_path / "index"


def _encode_images(model, paths) -> np.ndarray:
    with torch.no_grad():
        pixels = torch.stack([model.eval_transform(open_image(p)) for p in paths])
        return model.encode_image(pixels).numpy()


def _encode_text(model, text: str) -> np.ndarray:
    with torch.no_grad():
        return model.encode_text([text]).numpy()[0]


def test_flat_search_equals_numpy_brute_force_on_stored_float16(index_dir, model, photos):
    with SearchIndex.open(index_dir) as index:
        stored = np.asarray(index.embeddings, dtype=np.float32)
        for query in QUERIES:
            hits = index.search(text=query, k=5)
            rows, scores = top_k(stored, _encode_text(model, query), 5)
            assert [h.id for h in hits] == [index.ids[r] for r in rows]
            np.testing.assert_allclose([h.score for h in hits], scores, rtol=1e-5, atol=1e-6)
            assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        query_image = photos / "blue" / "3.png"
        hits = index.search(image=query_image, k=16)
        rows, scores = top_k(stored, _encode_images(model, [query_image])[0], 16)
        assert [h.id for h in hits] == [index.ids[r] for r in rows]
        assert hits[0].id == "blue/3.png"


def test_embeddings_are_stored_as_float16_in_row_order(index_dir, model, photos):
    with SearchIndex.open(index_dir) as index:
        assert index.embeddings.dtype == np.float16 and index.embeddings.shape == (16, model.embed_dim)
        assert isinstance(index.embeddings, np.memmap)
        expected = _encode_images(model, [photos / i for i in index.ids])
        np.testing.assert_array_equal(index.embeddings, expected.astype(np.float16))
        norms = np.linalg.norm(np.asarray(index.embeddings, dtype=np.float32), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=2e-3)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_text_and_image_mix_is_the_normalised_alpha_combination(index_dir, model, photos, alpha):
    image = photos / "red" / "5.png"
    expected = unit(alpha * _encode_images(model, [image])[0] + (1 - alpha) * _encode_text(model, QUERIES[0]))
    with SearchIndex.open(index_dir) as index:
        np.testing.assert_allclose(
            index.query_vector(QUERIES[0], image, alpha), expected, rtol=1e-5, atol=1e-6
        )
        hits = index.search(text=QUERIES[0], image=image.read_bytes(), alpha=alpha, k=6)
        rows, _ = top_k(np.asarray(index.embeddings, np.float32), expected, 6)
        assert [h.id for h in hits] == [index.ids[r] for r in rows]
        if alpha == 1.0:
            assert [h.id for h in hits] == [h.id for h in index.search(image=image, k=6)]
        if alpha == 0.0:
            assert [h.id for h in hits] == [h.id for h in index.search(text=QUERIES[0], k=6)]


def test_unreadable_images_are_skipped_and_counted(model_dir, photos, tmp_path):
    summary = build_index(model_dir, photos, tmp_path / "index", progress=False)
    broken = str((photos / "red" / "broken.png").resolve())
    assert summary["count"] == summary["added"] == 16 and summary["skipped_unreadable"] == 1
    assert list(summary["skipped_files"]) == [broken]
    info = index_info(tmp_path / "index")
    assert info["skipped_unreadable"] == 1 and broken in info["skipped_files"]
    with SearchIndex.open(tmp_path / "index") as index:
        assert not index.has("red/broken.png") and len(index) == 16
    assert not (tmp_path / ".index.staging").exists()


def test_manifest_rows_keep_ids_labels_captions_and_extra_columns(model_dir, tmp_path):
    write_pngs(tmp_path / "img", ["a.png", "b.png", "c.png"])
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "label", "captions", "url"])
        w.writerow(["first", "img/a.png", "cat", "a cat|a kitten", "https://x/a"])
        w.writerow(["", "img/b.png", "", "", "https://x/b"])
        w.writerow(["third", str((tmp_path / "img" / "c.png").resolve()), "dog", '["a dog"]', ""])
    build_index(model_dir, tmp_path / "m.csv", tmp_path / "index", progress=False)
    with SearchIndex.open(tmp_path / "index") as index:
        assert index.ids == ["first", "img/b.png", "third"]
        first = index.record("first")
        assert first == IndexedImage(
            "first",
            str((tmp_path / "img" / "a.png").resolve()),
            {"label": "cat", "captions": ["a cat", "a kitten"], "url": "https://x/a"},
        )
        assert index.record("img/b.png").metadata == {"label": "", "captions": [], "url": "https://x/b"}
        hit = index.search_by_id("third", k=1)[0]
        assert hit.id == "third" and hit.metadata["label"] == "dog" and hit.path.endswith("c.png")


def test_search_by_id_and_excluding_an_id(index_dir):
    with SearchIndex.open(index_dir) as index:
        hits = index.search_by_id("red/2.png", k=4)
        assert hits[0].id == "red/2.png" and hits[0].score == pytest.approx(1.0, abs=2e-3)
        without = index.search_by_id("red/2.png", k=4, exclude_self=True)
        assert [h.id for h in without] == [h.id for h in index.search_by_id("red/2.png", k=5)[1:]]
        assert [h.rank for h in without] == [1, 2, 3, 4]
        vector = index.embedding("blue/0.png")
        assert "blue/0.png" not in [h.id for h in index.search_vector(vector, k=16, exclude_id="blue/0.png")]
        assert len(index.search_vector(vector, k=1000)) == 16  # k above the index size: all images


def test_info_records_and_paths(index_dir, model_dir, photos):
    with SearchIndex.open(index_dir) as index:
        info = index.info
        for key in ("model", "fingerprint", "dim", "count", "backend", "factory", "normalized", "created"):
            assert key in info
        assert (info["model"], info["count"], info["backend"], info["factory"]) == (
            str(model_dir),
            16,
            "faiss",
            "Flat",
        )
        assert info["normalized"] is True and info["dim"] == 16
        assert index.image_path("blue/7.png") == (photos / "blue" / "7.png").resolve()
        assert index.has("blue/7.png") and not index.has("blue/70.png")
        with pytest.raises(UnknownId, match="No image with id 'nope'"):
            index.record("nope")
        with pytest.raises(UnknownId):
            index.image_path("../../etc/passwd")
        with pytest.raises(UnknownId):
            index.search_by_id("nope")
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["format"] == "mcip-index" and len(manifest["image_fingerprint"]) == 16


def test_concurrent_searches_equal_sequential_ones(index_dir, photos):
    with SearchIndex.open(index_dir) as index:
        jobs = [{"text": q} for q in QUERIES] + [{"image": p} for p in sorted(photos.glob("blue/*.png"))]
        expected = [[h.id for h in index.search(**job, k=5)] for job in jobs]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda job: [h.id for h in index.search(**job, k=5)], jobs * 4))
        assert got == expected * 4


def test_index_of_precomputed_embeddings_serves_vector_queries(tmp_path):
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(50, 8))).astype(np.float32)
    write_pngs(tmp_path / "img", [f"{i:02d}.png" for i in range(50)])
    index_embeddings(vectors, tmp_path / "img", tmp_path / "index")
    with SearchIndex.open(tmp_path / "index", load_model=False) as index:
        rows, _ = top_k(np.asarray(index.embeddings, np.float32), vectors[7], 10)
        hits = index.search_vector(vectors[7], k=10)
        assert [h.id for h in hits] == [index.ids[r] for r in rows] and hits[0].id == "07.png"
        batch = index.search_vectors(vectors[:3], k=10)
        assert [[h.id for h in hs] for hs in batch] == [
            [h.id for h in index.search_vector(v, 10)] for v in vectors[:3]
        ]
        with pytest.raises(ConfigError, match="load_model=False"):
            index.search(text="a cat")
    with pytest.raises(ConfigError, match="precomputed embeddings"):
        SearchIndex.open(tmp_path / "index")


def test_hits_equal_a_naive_reference_and_outlive_the_index(tmp_path):
    """search_vector's hits on the fast path: the same ids, scores, ranks and metadata as a naive loop over
    the exact ranking, the excluded id left out; they keep their metadata after the index is closed and
    pickle."""
    import pickle

    from mcip.index import Hit, Hits, IndexRecord

    rng = np.random.default_rng(1)
    vectors = unit(rng.normal(size=(30, 8))).astype(np.float32)
    records = [
        IndexRecord(f"r{i:02d}", tmp_path / f"{i}.png", label=f"c{i % 3}",
                    captions=["a caption"] if i % 2 else [], extra={"shelf": i} if i % 5 == 0 else {})
        for i in range(30)
    ]  # fmt: skip
    index_embeddings(vectors, records, tmp_path / "index")
    query = vectors[4] + 0.1
    with SearchIndex.open(tmp_path / "index", load_model=False) as index:
        stored = np.asarray(index.embeddings, np.float32)
        hits = index.search_vector(query, k=7, exclude_id="r04")
        batch = index.search_vectors(query[None], k=7)
        expected_meta = {r.id: index.record(r.id).metadata for r in records}
    assert isinstance(hits, Hits) and len(hits) == 7
    q = query / np.linalg.norm(query)
    order = [int(r) for r in np.argsort(-(stored @ q), kind="stable") if r != 4][:7]
    reference = [
        Hit(f"r{r:02d}", str(records[r].path), float((stored @ q)[r]), rank, expected_meta[f"r{r:02d}"])
        for rank, r in enumerate(order, 1)
    ]
    assert [h.id for h in hits] == [h.id for h in reference] and [h.rank for h in hits] == list(range(1, 8))
    assert [h.metadata for h in hits] == [h.metadata for h in reference]  # read after close()
    assert [h.score for h in hits] == pytest.approx([h.score for h in reference], abs=1e-5)
    assert hits == list(hits) and hits[1:3] == list(hits)[1:3] and hits[-1].rank == 7
    assert pickle.loads(pickle.dumps(hits)) == list(hits)
    assert [h.id for h in batch[0]] == [f"r{r:02d}" for r in np.argsort(-(stored @ q), kind="stable")[:7]]
    assert hits != [*list(hits)[:6], hits[0]] and hits != "r00"


def test_hits_are_built_once_on_first_read_and_behave_like_a_list(tmp_path):
    """Hits: nothing is built until read; then one list (the same Hit objects on every read), equal to
    lists and tuples of the same hits, sliceable, reversible, falsy when empty; reading the records of a
    closed index fails with a message while its hits stay readable."""
    from mcip.errors import InputError
    from mcip.index import Hits, IndexRecord

    rng = np.random.default_rng(2)
    vectors = unit(rng.normal(size=(12, 8))).astype(np.float32)
    records = [IndexRecord(f"r{i:02d}", tmp_path / f"{i}.png", label=f"c{i % 2}") for i in range(12)]
    index_embeddings(vectors, records, tmp_path / "index")
    with SearchIndex.open(tmp_path / "index", load_model=False) as index:
        hits = index.search_vector(vectors[3], k=4)
        empty = index.search_vector(vectors[3], k=4, where=["label=none"])
        assert hits._built is None  # not built by the search
        first = hits[0]
        assert hits._built is not None and hits[0] is first and next(iter(hits)) is first
    assert isinstance(hits, Hits) and first.id == "r03" and first.rank == 1
    assert hits == tuple(hits) and hits == list(hits) and next(reversed(hits)).rank == 4
    assert hits[1:] == list(hits)[1:] and first in hits and hits.index(first) == 0
    assert not empty and len(empty) == 0 and empty == [] and repr(empty) == "Hits([])"
    with pytest.raises(TypeError):
        hash(hits)
    with pytest.raises(InputError, match="closed"):
        index._stored.metadata(0)


def test_unit_queries_are_searched_as_they_are_and_others_normalised(tmp_path):
    """A query already of unit length (within UNIT_TOLERANCE) is used as is; a longer one gives the same
    ranking and cosine scores as its unit vector; a zero or non-finite one is refused."""
    from mcip.errors import InputError
    from mcip.index import IndexRecord
    from mcip.index.query import UNIT_TOLERANCE, unit_query

    v = unit(np.random.default_rng(3).normal(size=(16,))).astype(np.float32)
    assert unit_query(v) is v
    long = 3 * v
    assert abs(float(long @ long) - 1) > UNIT_TOLERANCE and np.allclose(unit_query(long), v, atol=1e-7)
    for bad in (np.zeros(16, np.float32), np.full(16, np.nan, np.float32), np.full(16, np.inf, np.float32)):
        with pytest.raises(InputError, match="zero length or non-finite"):
            unit_query(bad)
    vectors = unit(np.random.default_rng(4).normal(size=(20, 16))).astype(np.float32)
    index_embeddings(
        vectors, [IndexRecord(str(i), tmp_path / f"{i}.png") for i in range(20)], tmp_path / "ix"
    )
    with SearchIndex.open(tmp_path / "ix", load_model=False) as index:
        a, b = index.search_vector(v, k=5), index.search_vector(long, k=5)
        assert [h.id for h in a] == [h.id for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-6)
        with pytest.raises(InputError, match="zero length"):
            index.search_vector(np.zeros(16, np.float32))
