"""Indexing webdataset shards: each image is stored as ``SHARD.tar#KEY`` and ``mcip serve`` returns it by
reading that member; the index equals the one built from the manifest the shards were written from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import mcip
from mcip.data.images import read_image_bytes
from mcip.data.shard_ref import split_member_ref
from mcip.data.shard_writer import shard_manifest
from tests.data.conftest import write_png


@pytest.fixture(scope="module")
def collection(tiny_openclip, tmp_path_factory):
    """(model dir, manifest, shard folder, index from the manifest, index from the shards)."""
    from mcip.index import build_index

    root = tmp_path_factory.mktemp("shard_index")
    torch.manual_seed(0)
    model = mcip.save_model(mcip.load_model(f"openclip:{tiny_openclip}"), root / "model")
    rows = []
    for i in range(9):
        write_png(root / "img" / f"{i}.png", seed=100 + i)
        rows.append(json.dumps({"path": f"img/{i}.png", "label": f"c{i % 3}", "id": f"p{i}"}) + "\n")
    manifest = root / "m.jsonl"
    manifest.write_text("".join(rows))
    shard_manifest(manifest, root / "shards", shard_size=4, seed=2)
    build_index(str(model), manifest, root / "from_manifest", progress=False)
    build_index(str(model), str(root / "shards" / "*.tar"), root / "from_shards", progress=False)
    return model, manifest, root / "shards", root / "from_manifest", root / "from_shards"


def test_the_index_of_the_shards_equals_the_index_of_the_manifest(collection):
    from mcip.index import SearchIndex

    _, manifest, shards, a_dir, b_dir = collection
    a, b = SearchIndex.open(a_dir), SearchIndex.open(b_dir)
    ids = [f"p{i}" for i in range(9)]
    assert sorted(r.id for r in a.iter_records()) == sorted(r.id for r in b.iter_records()) == ids
    for i in ids:
        np.testing.assert_allclose(a.embedding(i), b.embedding(i), rtol=0, atol=1e-6)
        shard, key = split_member_ref(b.image_path(i))
        assert shard.parent == shards.resolve() and shard.is_absolute() and len(key) == 9
        assert read_image_bytes(b.image_path(i)) == (manifest.parent / "img" / f"{i[1:]}.png").read_bytes()
    query = mcip.data.open_image(manifest.parent / "img" / "4.png")
    hits_a, hits_b = a.search(image=query, k=5), b.search(image=query, k=5)
    assert [h.id for h in hits_a] == [h.id for h in hits_b] and hits_b[0].id == "p4"


def test_serve_returns_the_image_of_a_hit_from_its_shard(collection):
    from fastapi.testclient import TestClient

    from mcip.index import SearchIndex
    from mcip.serve import create_app

    _, manifest, _, _, b_dir = collection
    index = SearchIndex.open(b_dir)
    with TestClient(create_app(index)) as client:
        body = client.get("/search", params={"text": "a photo", "k": 3}).json()
        for result in body["results"]:
            response = client.get(result["url"])
            assert response.status_code == 200
            assert response.headers["content-type"] == "image/png"
            number = result["id"][1:]
            assert response.content == (manifest.parent / "img" / f"{number}.png").read_bytes()


def test_index_add_re_encodes_only_the_sample_whose_bytes_changed_in_a_rewritten_shard(collection, tmp_path):
    from mcip.index import SearchIndex, add_to_index, build_index

    model, manifest, shards, _, _ = collection
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    index_dir = tmp_path / "index"
    build_index(str(model), str(copy / "*.tar"), index_dir, progress=False)
    before = SearchIndex.open(index_dir)
    old = {i: before.embedding(f"p{i}") for i in range(9)}
    summary = add_to_index(index_dir, str(copy / "*.tar"), progress=False)
    assert summary["added"] == 0 and summary["skipped_duplicates"] == 9  # the shards are as indexed

    source = tmp_path / "source"  # the same manifest with image 5 redrawn, sharded the same way
    shutil.copytree(manifest.parent / "img", source / "img")
    write_png(source / "img" / "5.png", seed=999)
    shutil.copy(manifest, source / "m.jsonl")
    shard_manifest(source / "m.jsonl", tmp_path / "rewritten", shard_size=4, seed=2)
    shard = split_member_ref(before.image_path("p5"))[0]
    shutil.copy(tmp_path / "rewritten" / shard.name, copy / shard.name)
    summary = add_to_index(index_dir, str(copy / "*.tar"), progress=False)
    assert summary["replaced"] == 1 and summary["added"] == 0
    after = SearchIndex.open(index_dir)
    assert not np.allclose(after.embedding("p5"), old[5])
    for i in (0, 1, 2, 3, 4, 6, 7, 8):
        np.testing.assert_array_equal(after.embedding(f"p{i}"), old[i])
