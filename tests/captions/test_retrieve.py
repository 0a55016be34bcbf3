"""Caption retrieval from a pool, templates, merge and summary."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import mcip
from mcip.captions.merge import merge_sidecars
from mcip.captions.retrieve import exact_top_k, faiss_top_k, iter_pool, load_pool, retrieve_captions
from mcip.captions.summary import format_summary, summarize_file
from mcip.captions.templates import default_templates, read_class_names, template_captions
from mcip.data import ImageRecord, read_caption_sidecar
from mcip.data.captions import read_caption_entries


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


def test_pool_formats_and_dedupe(tmp_path):
    (tmp_path / "p.txt").write_text("a red car\na  red car\n\nblue sky\n")
    (tmp_path / "p.csv").write_text("id,caption\n1,a dog\n2,a cat\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"text": "x"}) + "\n" + json.dumps({"text": "y"}) + "\n")
    assert load_pool(tmp_path / "p.txt") == (["a red car", "blue sky"], 4)  # whitespace-normalised duplicate
    assert [t for c in iter_pool(tmp_path / "p.csv") for t in c] == ["a dog", "a cat"]
    assert [t for c in iter_pool(tmp_path / "p.jsonl") for t in c] == ["x", "y"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"alt": ["p", "q", "p"]}), tmp_path / "p.parquet")
    assert load_pool(tmp_path / "p.parquet")[0] == ["p", "q"]
    (tmp_path / "n.csv").write_text("a,b\n1,2\n")
    with pytest.raises(mcip.InputError, match="--column"):
        list(iter_pool(tmp_path / "n.csv"))


def test_exact_top_k_matches_a_full_sort_and_faiss():
    images, pool = _unit(7, 16, 0), _unit(50, 16, 1).numpy()
    pool[13] = pool[4]  # a tie: the lower index wins
    scores, ids = exact_top_k(images, pool, k=5, pool_chunk=12, progress=False)
    sim = images @ torch.from_numpy(pool).T
    for i in range(7):
        order = sorted(range(50), key=lambda j: (-float(sim[i, j]), j))[:5]
        assert ids[i].tolist() == order
        torch.testing.assert_close(scores[i], sim[i, order])
    pytest.importorskip("faiss")
    f_scores, f_ids = faiss_top_k(images, pool, k=5)
    torch.testing.assert_close(f_scores, scores, atol=1e-5, rtol=1e-5)
    assert (
        set(map(tuple, f_ids.tolist())) == set(map(tuple, ids.tolist()))
        or (f_ids == ids).float().mean() > 0.9
    )


@pytest.fixture
def records(tmp_path):
    out = []
    for i, rgb in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (20, 20), rgb).save(path)
        out.append(ImageRecord(f"img{i}", path, f"c{i}"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    return [*out, ImageRecord("bad", bad, "c0")]


def test_retrieve_end_to_end_with_threshold_resume_and_unreadable(records, tmp_path, model_specs):
    model = mcip.load_model(model_specs["openclip"]["spec"])
    pool = tmp_path / "pool.txt"
    pool.write_text(
        "\n".join(["a red square", "a green square", "a blue square", "a red square", "sky"]) + "\n"
    )
    out = tmp_path / "caps.jsonl"
    s = retrieve_captions(
        model, records, pool, out, top_k=2, min_sim=-1.0, cache_dir=tmp_path / "c", progress=False
    )
    assert (s.pool_lines, s.pool_unique, s.captions_written) == (5, 4, 6)
    assert s.unreadable == [str(records[3].path)]
    entries = read_caption_entries(out)
    assert set(entries) == {"img0", "img1", "img2"}
    first = entries["img0"]
    assert (
        len(first) == 2
        and first[0]["score"] >= first[1]["score"]
        and first[0]["source"] == "retrieval:pool.txt"
    )
    again = retrieve_captions(model, records[:3], pool, out, cache_dir=tmp_path / "c", progress=False)
    assert again.skipped_done == 3 and again.captions_written == 0  # resumed: nothing redone
    strict = retrieve_captions(
        model,
        records[:3],
        pool,
        tmp_path / "none.jsonl",
        min_sim=1.01,
        cache_dir=tmp_path / "c",
        progress=False,
    )
    assert strict.without_captions == 3 and read_caption_sidecar(tmp_path / "none.jsonl")["img1"] == []


def test_templates_names_and_resume(records, tmp_path):
    assert len(default_templates()) == 80 and all("{}" in t for t in default_templates())
    names_file = tmp_path / "names.tsv"
    names_file.write_text("c0\tred thing\n")
    names = read_class_names(names_file, ["c0", "c1", "c2"])
    assert names == {"c0": "red thing", "c1": "c1", "c2": "c2"}
    out = tmp_path / "t.jsonl"
    assert template_captions(records[:3], out, names, per_image=4) == 12
    caps = read_caption_sidecar(out)
    assert all(len(v) == 4 for v in caps.values()) and all("red thing" in c for c in caps["img0"])
    wordings = [{c.replace(n, "{}") for c in caps[i]} for i, n in (("img1", "c1"), ("img2", "c2"))]
    assert wordings[0] != wordings[1]  # templates are chosen per image id, not per class
    assert template_captions(records[:3], out, names, per_image=4) == 0  # resumed
    with pytest.raises(mcip.InputError, match="not a class"):
        (tmp_path / "bad.tsv").write_text("zz\tname\n")
        read_class_names(tmp_path / "bad.tsv", ["c0"])


def test_merge_precedence_dedupe_cap_and_summary(tmp_path):
    from mcip.data.captions import write_caption_sidecar

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_caption_sidecar(a, {"x": ["one", "two"], "y": []}, source="vlm")
    write_caption_sidecar(b, {"x": ["two", "three", "four"], "z": ["five"]}, source="retrieval")
    merged = merge_sidecars([a, b], tmp_path / "m.jsonl", max_per_image=3)
    assert [e["text"] for e in merged["x"]] == ["one", "two", "three"]
    assert [e["source"] for e in merged["x"]] == ["vlm", "vlm", "retrieval"]
    summary = summarize_file(tmp_path / "m.jsonl")
    assert summary["images"] == 3 and summary["images_without_captions"] == 1
    assert summary["per_image"] == {"min": 0, "median": 1, "max": 3}
    assert "median 1" in format_summary(summary)
    with pytest.raises(mcip.ConfigError, match="also an input"):
        merge_sidecars([a], a)
