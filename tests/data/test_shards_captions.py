"""``mcip captions retrieve`` from webdataset shards writes the sidecar it writes from the manifest the
shards were written from (same ids, captions and scores)."""

from __future__ import annotations

import json

from PIL import Image

from mcip.cli import main
from mcip.data import read_caption_sidecar
from mcip.data.shard_writer import shard_manifest


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
