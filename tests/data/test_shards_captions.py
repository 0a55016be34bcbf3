"""``mcip captions retrieve`` from webdataset shards writes the sidecar it writes from the manifest the
shards were written from (same ids, captions and scores)."""

from __future__ import annotations

import json

from PIL import Image

from mcip.cli import main
from mcip.data import read_caption_sidecar
from mcip.data.shard_writer import shard_manifest
from tests.captions.test_generate import blip_dir  # noqa: F401  (the tiny BLIP captioner fixture)


def _retrieve(images: str, spec: str, out, cache) -> dict:
    args = ["captions", "retrieve", "--images", images, "--pool", str(out.parent / "pool.txt")]
    args += ["--model", spec, "--top-k", "2", "--min-sim", "-1", "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    return read_caption_sidecar(out)


def test_captions_retrieve_reads_shards_as_the_manifest(model_specs, tmp_path):
    rows = []
    for i, rgb in enumerate([(220, 20, 20), (20, 20, 220), (20, 200, 20), (200, 200, 20), (90, 90, 90)]):
        Image.new("RGB", (20, 20), rgb).save(tmp_path / f"{i}.png")
        rows.append(json.dumps({"path": f"{i}.png", "label": str(i % 2), "id": f"img{i}"}) + "\n")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(rows))
    (tmp_path / "pool.txt").write_text("a red thing\na blue thing\na tree\na yellow sun\n")
    shard_manifest(manifest, tmp_path / "shards", shard_size=2, seed=3)
    spec = model_specs["hf-clip"]["spec"]  # weights saved on disk: the same model in both runs
    a = _retrieve(str(manifest), spec, tmp_path / "a.jsonl", tmp_path / "cache-a")
    b = _retrieve(str(tmp_path / "shards" / "*.tar"), spec, tmp_path / "b.jsonl", tmp_path / "cache-b")
    assert sorted(a) == [f"img{i}" for i in range(5)]
    assert a == b
    scores = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert scores == [json.loads(line) for line in sorted((tmp_path / "b.jsonl").read_text().splitlines())]


def test_captions_generate_reads_shard_samples_as_the_files(tmp_path, blip_dir):  # noqa: F811
    from mcip.captions.generate import generate_captions
    from mcip.data import load_records

    rows = []
    for i, rgb in enumerate([(220, 20, 20), (20, 20, 220), (20, 200, 20)]):
        Image.new("RGB", (20, 20), rgb).save(tmp_path / f"{i}.png")
        rows.append(json.dumps({"path": f"{i}.png", "label": "x", "id": f"img{i}"}) + "\n")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(rows))
    shard_manifest(manifest, tmp_path / "shards", shard_size=2, shuffle=False)
    kw = {"n": 2, "batch_size": 3, "max_new_tokens": 8, "seed": 1, "progress": False}
    generate_captions(load_records(manifest), blip_dir, tmp_path / "a.jsonl", **kw)
    generate_captions(load_records(str(tmp_path / "shards" / "*.tar")), blip_dir, tmp_path / "b.jsonl", **kw)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert sorted(read_caption_sidecar(tmp_path / "a.jsonl")) == ["img0", "img1", "img2"]
