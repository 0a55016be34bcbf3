"""The manifest benchmarks read webdataset shards (``manifest=shards/*.tar``) and manifests whose paths are
shard members (``SHARD.tar#KEY``): the numbers of the same images as files."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mcip.data import load_records
from mcip.data.shard_writer import shard_manifest
from mcip.eval.benchmarks import create_benchmark
from mcip.eval.runner import evaluate_models

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def test_manifest_benchmarks_on_shards_give_the_numbers_of_the_files(model_specs, tmp_path):
    rows = []
    for c, (name, rgb) in enumerate(COLOURS.items()):
        for i in range(3):
            noise = np.random.default_rng(10 * c + i).normal(0, 90, (24, 20 + 3 * i, 3))
            pixels = np.clip(np.asarray(rgb) // 3 + 80 + noise, 0, 255).astype(np.uint8)  # not a trivial mAP
            Image.fromarray(pixels).save(tmp_path / f"{name}{i}.png")
            rows.append({"path": f"{name}{i}.png", "label": name, "captions": [f"a {name} square"]})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shard_manifest(manifest, tmp_path / "shards", shard_size=4, seed=1)
    members = tmp_path / "members.jsonl"  # a manifest that lists the shard members by reference
    members.write_text(
        "".join(
            json.dumps({"path": str(r.path.relative_to(tmp_path)), "label": r.label, "id": r.id}) + "\n"
            for r in load_records(str(tmp_path / "shards" / "*.tar"))
        )
    )
    sources = {"files": manifest, "shards": tmp_path / "shards" / "*.tar", "members": members}
    benchmarks = []
    for source in sources.values():
        benchmarks += [
            create_benchmark("manifest_i2i", manifest=str(source)),
            create_benchmark("manifest_zeroshot", manifest=str(source)),
        ]
    reports = []
    for i in range(0, len(benchmarks), 2):  # one report per source (results are keyed by benchmark name)
        (report,) = evaluate_models(
            [model_specs["hf-clip"]["spec"]],
            benchmarks[i : i + 2],
            tmp_path / f"r{i}",
            cache_dir=tmp_path / "c",
        )
        reports.append(report)
    files, shards, refs = reports
    for name in ("manifest_i2i", "manifest_zeroshot"):
        assert files.results[name].images == shards.results[name].images == refs.results[name].images == 9
        assert shards.results[name].unreadable == refs.results[name].unreadable == 0
        assert files.results[name].metrics, name
        for key, value in files.results[name].metrics.items():
            np.testing.assert_allclose(shards.results[name].metrics[key], value, rtol=0, atol=1e-9)
            np.testing.assert_allclose(refs.results[name].metrics[key], value, rtol=0, atol=1e-9)
