"""``check_index``: text-to-image recall against mcip's evaluation metric, the verdict, caption sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mcip.errors import InputError
from mcip.eval.metrics import text_to_image_recall
from mcip.index import SearchIndex, build_index, check_index, index_embeddings
from mcip.index.check import ranks_of_targets
from tests.index.helpers import unit, write_pngs

WORDS = ["red", "blue", "green", "dog", "cat", "bird", "car", "tree", "house", "apple", "small", "large"]


def _captioned(tmp_path, n: int, seed: int = 0):
    """n images and a JSONL manifest with two random captions each (ids img/i.png)."""
    rng = np.random.default_rng(seed)
    write_pngs(tmp_path / "img", [f"{i:03d}.png" for i in range(n)], seed=seed)
    rows = [
        {"path": f"img/{i:03d}.png", "captions": [" ".join(rng.choice(WORDS, 3)) for _ in range(2)]}
        for i in range(n)
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_ranks_of_targets_against_a_naive_loop_with_ties():
    rng = np.random.default_rng(0)
    embeddings = unit(rng.normal(size=(50, 8))).astype(np.float16)
    embeddings[10] = embeddings[3]  # an exact tie: row 3 ranks before row 10
    queries = rng.normal(size=(12, 8)).astype(np.float32)
    queries[0] = embeddings[3].astype(np.float32)
    targets = rng.integers(0, 50, 12)
    targets[0], targets[1] = 10, 3
    queries[1] = embeddings[3].astype(np.float32)
    sim = queries.astype(np.float64) @ embeddings.astype(np.float64).T
    naive = []
    for i, t in enumerate(targets):
        order = sorted(range(50), key=lambda j: (-round(sim[i, j], 6), j))  # ties at 1e-6, then by row
        naive.append(order.index(t) + 1)
    assert ranks_of_targets(queries, embeddings, targets, chunk=7).tolist() == naive
    assert naive[0] == 2 and naive[1] == 1  # the tie of rows 3 and 10 goes to row 3


def test_recall_equals_mcip_eval_metric_on_the_sample(model_dir, model, tmp_path):
    rows = _captioned(tmp_path, 40)
    build_index(model_dir, tmp_path / "img", tmp_path / "index", progress=False)
    result = check_index(tmp_path / "index", tmp_path / "m.jsonl", sample=25, seed=3)
    assert (result["images_sampled"], result["queries"], result["index_size"]) == (25, 50, 40)
    sampled = np.sort(np.random.default_rng(3).permutation(40)[:25])
    texts = [c for i in sampled for c in rows[i]["captions"]]
    targets = torch.tensor([i for i in sampled for _ in rows[i]["captions"]])
    with SearchIndex.open(tmp_path / "index") as index, torch.no_grad():
        images = torch.from_numpy(np.asarray(index.embeddings, dtype=np.float32))
        reference = text_to_image_recall(model.encode_text(texts), images, targets, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert result[f"recall@{k}"] == pytest.approx(reference[k], abs=1e-9)


def test_random_model_is_flagged_and_aligned_embeddings_pass(model, tmp_path):
    rows = _captioned(tmp_path, 60, seed=1)
    texts = [r["captions"][0] for r in rows]
    with torch.no_grad():
        random_images = torch.nn.functional.normalize(torch.randn(60, model.embed_dim), dim=-1).numpy()
        aligned = model.encode_text(texts).numpy()  # as if each image embedding matched its caption
    index_embeddings(random_images, tmp_path / "m.jsonl", tmp_path / "broken", model=model)
    broken = check_index(tmp_path / "broken", tmp_path / "m.jsonl", model=model)
    assert broken["verdict"] == "broken" and "GPR-FT without Re-A" in broken["warning"]
    assert broken["threshold@10"] == pytest.approx(0.5) and broken["chance@10"] == pytest.approx(10 / 60)
    index_embeddings(aligned, tmp_path / "m.jsonl", tmp_path / "aligned", model=model)
    ok = check_index(tmp_path / "aligned", tmp_path / "m.jsonl", model=model)
    assert ok["verdict"] == "ok" and ok["warning"] is None and ok["recall@10"] >= 0.5


def test_small_index_is_undetermined_and_sidecars_match_by_id(model_dir, tmp_path):
    _captioned(tmp_path, 12)
    build_index(model_dir, tmp_path / "img", tmp_path / "index", progress=False)
    sidecar = tmp_path / "captions.jsonl"
    lines = [
        {"id": "003.png", "captions": [{"text": "a red dog", "source": "vlm"}]},
        {"id": "nope", "captions": ["x"]},
    ]
    sidecar.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = check_index(tmp_path / "index", sidecar)
    assert (result["images_sampled"], result["queries"], result["unmatched_rows"]) == (1, 1, 1)
    assert result["verdict"] == "undetermined" and "too few" in result["warning"]


def test_captions_of_no_indexed_image(model_dir, tmp_path):
    _captioned(tmp_path, 3)
    build_index(model_dir, tmp_path / "img", tmp_path / "index", progress=False)
    (tmp_path / "other.jsonl").write_text('{"id": "elsewhere.png", "captions": ["a cat"]}\n')
    with pytest.raises(InputError, match=r"No caption in .* belongs to an image of"):
        check_index(tmp_path / "index", tmp_path / "other.jsonl")
    with pytest.raises(InputError, match="is a folder"):
        check_index(tmp_path / "index", tmp_path / "img")
