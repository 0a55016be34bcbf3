"""Appending to an index, and which models may query or extend it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mcip
from mcip.errors import ConfigError
from mcip.index import SearchIndex, add_to_index, build_index, index_info
from tests.index.helpers import top_k, write_pngs


def test_add_appends_new_images_and_skips_known_ids(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "index", progress=False)
    with SearchIndex.open(tmp_path / "index") as index:
        old_ids, old_embeddings = list(index.ids), np.array(index.embeddings)
    write_pngs(photos, ["green/0.png", "green/1.png", "green/2.png"], seed=7)
    summary = add_to_index(tmp_path / "index", photos, batch_size=2, progress=False)
    assert (summary["added"], summary["count"], summary["skipped_duplicates"]) == (3, 19, 16)
    assert summary["skipped_unreadable"] == 1  # the corrupt file is tried again, still unreadable
    with SearchIndex.open(tmp_path / "index") as index:
        assert index.ids == [*old_ids, "green/0.png", "green/1.png", "green/2.png"]
        np.testing.assert_array_equal(index.embeddings[:16], old_embeddings)
        vector = index.embedding("green/1.png")
        rows, _ = top_k(np.asarray(index.embeddings, np.float32), vector / np.linalg.norm(vector), 19)
        assert [h.id for h in index.search_vector(vector, k=19)] == [index.ids[r] for r in rows]
        assert index.search(image=photos / "green" / "2.png", k=1)[0].id == "green/2.png"
    again = add_to_index(tmp_path / "index", photos, progress=False)
    assert (again["added"], again["count"], again["skipped_duplicates"]) == (0, 19, 19)
    info = index_info(tmp_path / "index")
    assert [h["op"] for h in info["history"]] == ["build", "add"]
    assert info["skipped_duplicates"] == 16 and info["count"] == 19


def test_a_model_with_another_image_tower_is_refused(model_dir, other_model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "index", progress=False)
    with pytest.raises(ConfigError, match="image tower fingerprint") as err:
        SearchIndex.open(tmp_path / "index", model=other_model_dir)
    assert str(model_dir) in str(err.value) and "rebuild" in str(err.value)
    write_pngs(tmp_path / "more", ["x.png"], seed=3)
    with pytest.raises(ConfigError, match="image tower fingerprint"):
        add_to_index(tmp_path / "index", tmp_path / "more", model=other_model_dir, progress=False)
    with SearchIndex.open(tmp_path / "index", model=model_dir) as index:  # the same weights: fine
        assert not index.info["text_tower_changed"]


def test_a_spec_that_reloads_other_weights_is_refused(tiny_openclip, photos, tmp_path):
    torch.manual_seed(0)
    model = mcip.load_model(f"openclip:{tiny_openclip}")  # random weights: the spec cannot reproduce them
    build_index(model, photos, tmp_path / "index", progress=False)
    with pytest.raises(ConfigError, match="image embeddings differ from the stored ones"):
        SearchIndex.open(tmp_path / "index")
    with SearchIndex.open(tmp_path / "index", model=model) as index:
        assert len(index.search(text="a cat", k=3)) == 3


def test_a_re_aligned_text_tower_may_query_the_index(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "index", progress=False)
    realigned = mcip.load_model(model_dir)
    with torch.no_grad():
        realigned.net.text_projection.mul_(-1.0)  # what Re-A does: the text side moves, images stay
    with pytest.warns(UserWarning, match="another text tower"):
        index = SearchIndex.open(tmp_path / "index", model=realigned)
    with index:
        assert index.info["text_tower_changed"]
        with torch.no_grad():
            text = realigned.encode_text(["a cat"]).numpy()[0]
        rows, _ = top_k(np.asarray(index.embeddings, np.float32), text, 5)
        assert [h.id for h in index.search(text="a cat", k=5)] == [index.ids[r] for r in rows]


def test_precision_is_stored_and_used_when_reopening(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "index", progress=False, model_options={"precision": "bf16"})
    info = index_info(tmp_path / "index")
    assert info["model_options"] == {"precision": "bf16", "drop_projector": False}
    with SearchIndex.open(tmp_path / "index") as index:
        assert index.model.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="image tower fingerprint"):
        SearchIndex.open(tmp_path / "index", model=mcip.load_model(model_dir))  # fp32 weights differ
