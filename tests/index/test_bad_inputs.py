"""Bad queries and bad builds fail with a message that says what is wrong, before any work is lost."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mcip.errors import ConfigError, InputError
from mcip.index import MAX_K, MAX_TEXT_CHARS, SearchIndex, build_index
from tests.index.helpers import write_pngs


@pytest.fixture(scope="module")
def index(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    write_pngs(root / "img", [f"{i}.png" for i in range(16)])
    build_index(model_dir, root / "img", root / "index", progress=False)
    with SearchIndex.open(root / "index") as opened:
        yield opened


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "Give a text query, an image, or both"),
        ({"text": "   "}, "text query is empty"),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, f"the limit is {MAX_TEXT_CHARS}"),
        ({"text": 42}, "text must be a string"),
        ({"image": b"not an image"}, "Cannot decode the uploaded image"),
        ({"image": b""}, "empty"),
        ({"image": "/no/such/file.png"}, "Query image not found"),
        ({"image": 3.5}, "image must be a PIL image"),
        ({"text": "a cat", "k": 0}, f"k must be an integer from 1 to {MAX_K}"),
        ({"text": "a cat", "k": MAX_K + 1}, "k must be an integer"),
        ({"text": "a cat", "k": "5"}, "k must be an integer"),
        ({"text": "a cat", "alpha": 1.5}, "alpha must be a number from 0 to 1"),
        ({"text": "a cat", "alpha": float("nan")}, "alpha must be a number"),
        ({"text": "", "image": b"junk"}, "text query is empty"),
    ],
)
def test_bad_queries_raise_input_errors(index, kwargs, message):
    with pytest.raises(InputError, match=message):
        index.search(**kwargs)


def test_truncated_image_upload_is_refused(index):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="PNG")
    with pytest.raises(InputError, match="Cannot decode"):
        index.search(image=buf.getvalue()[:60])
    assert index.search(image=Image.new("RGB", (10, 10), "red"), k=2)  # a PIL image is fine


def test_bad_vectors_are_refused(index):
    with pytest.raises(InputError, match="has 3 dimensions; this index holds 16"):
        index.search_vector(np.ones(3))
    with pytest.raises(InputError, match="zero length"):
        index.search_vector(np.zeros(16))
    with pytest.raises(InputError, match="zero length or non-finite"):
        index.search_vector(np.full(16, np.nan))


def test_opening_something_that_is_not_an_index(tmp_path):
    with pytest.raises(InputError, match=r"is not an mcip index \(does not exist\); build one with"):
        SearchIndex.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"has no manifest\.json"):
        SearchIndex.open(tmp_path / "empty")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"factory": "Bogus"}, ConfigError, "could not parse index string Bogus"),
        ({"factory": "IVF4,PQ5"}, ConfigError, "PQ needs M dividing 16"),
        ({"backend": "milvus"}, ConfigError, "Unknown index backend 'milvus'. Valid names: faiss, qdrant"),
        ({"nprobe": 4}, ConfigError, "Unknown option.s. nprobe for the faiss backend"),
        ({"backend": "qdrant", "factory": "HNSW32"}, ConfigError, "is a FAISS index structure"),
        ({"batch_size": 0}, ConfigError, "batch_size must be >= 1"),
        (
            {"search_params": "efSearch=64"},
            ConfigError,
            "Cannot set search parameters 'efSearch=64' on a 'Flat'",
        ),
    ],
)
def test_bad_build_options_fail_before_encoding(model_dir, photos, tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        build_index(model_dir, photos, tmp_path / "index", progress=False, **kwargs)
    assert not (tmp_path / "index").exists()


def test_ivf_with_more_lists_than_vectors_says_what_to_use(model_dir, photos, tmp_path):
    with pytest.raises(ConfigError, match=r"IVF64,Flat' has 64 inverted lists.*this index has 16.*IVF1"):
        build_index(model_dir, photos, tmp_path / "index", factory="IVF64,Flat", progress=False)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing-folder", "Image source not found"),
        ("shards-{0000..0003}.tar", "Shard not found"),  # shards are indexed; these are absent
        ("notes.txt", "expected an image folder or a manifest"),
    ],
)
def test_bad_sources(model_dir, tmp_path, source, message):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=message):
        build_index(model_dir, tmp_path / source, tmp_path / "index", progress=False)


def test_a_manifest_row_without_a_path_is_named(model_dir, tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.png"}\n{"label": "x"}\n')
    with pytest.raises(InputError, match=r"m.jsonl, row 2: no image path"):
        build_index(model_dir, tmp_path / "m.jsonl", tmp_path / "index", progress=False)


def test_all_images_unreadable(model_dir, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"junk")
    with pytest.raises(InputError, match="None of the 1 images could be read"):
        build_index(model_dir, tmp_path / "img", tmp_path / "index", progress=False)


def test_a_folder_that_is_not_an_index_is_never_replaced(model_dir, photos, tmp_path):
    with pytest.raises(ConfigError, match="exists and is not an mcip index"):
        build_index(model_dir, photos, photos, progress=False)
    assert (photos / "red" / "0.png").is_file()
    (tmp_path / "empty").mkdir()
    assert build_index(model_dir, photos, tmp_path / "empty", progress=False)["count"] == 16
