"""The manifest benchmarks end to end with a tiny model: the numbers of the folder benchmarks on the same
images, and unreadable files skipped and counted through `mcip eval`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from mcip.cli import main
from mcip.eval.benchmarks import create_benchmark
from mcip.eval.runner import evaluate_models

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "grey_ish": (120, 120, 120)}


def _one_set_two_layouts(root):
    """PNGs in ``imgs/<split>/<class>/<i>.png`` and a CSV manifest listing them (shuffled rows)."""
    rows = []
    for split, per_class in (("train", 3), ("test", 2)):
        for c, (name, rgb) in enumerate(COLOURS.items()):
            for i in range(per_class):
                rel = f"{split}/{name}/{i}.png"
                (root / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
                shade = tuple(min(255, v + 9 * i + 5 * c) for v in rgb)
                Image.new("RGB", (20 + 3 * i, 24), shade).save(root / "imgs" / rel)
                rows.append(f"{rel},{name},{split},a {name.replace('_', ' ')} square\n")
    rows = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    manifest = root / "imgs" / "m.csv"
    manifest.write_text("path,label,split,captions\n" + "".join(rows))
    names = root / "names.tsv"
    names.write_text("".join(f"{n}\t{n.replace('_', ' ')}\n" for n in COLOURS))
    return manifest, names


def test_manifest_and_folder_benchmarks_give_identical_numbers(model_specs, tmp_path):
    manifest, names = _one_set_two_layouts(tmp_path)
    imgs = tmp_path / "imgs"
    pairs = [
        (("folder_i2i", {"path": imgs / "test"}), ("manifest_i2i", {"manifest": manifest, "split": "test"})),
        (
            ("folder_knn", {"index": imgs / "train", "queries": imgs / "test"}),
            ("manifest_knn", {"manifest": manifest, "index": "train", "query": "test"}),
        ),
        (
            ("classnames_zeroshot", {"images": imgs / "test", "classnames": names}),
            ("manifest_zeroshot", {"manifest": manifest, "split": "test", "names": names}),
        ),
    ]
    benchmarks = [create_benchmark(n, **o) for pair in pairs for n, o in pair]
    (report,) = evaluate_models(
        [model_specs["openclip"]["spec"]], benchmarks, tmp_path, cache_dir=tmp_path / "cache"
    )
    for (folder, _), (mine, _) in pairs:
        assert report.results[folder].metrics == report.results[mine].metrics
        assert report.results[folder].images == report.results[mine].images > 0
        assert report.results[mine].unreadable == 0


def test_unreadable_and_absent_files_are_skipped_and_counted_by_mcip_eval(model_specs, tmp_path, capsys):
    manifest, _ = _one_set_two_layouts(tmp_path)
    (tmp_path / "imgs" / "test" / "red" / "0.png").write_bytes(b"not a png")  # corrupt
    with manifest.open("a") as f:
        f.write("test/red/deleted.png,red,test,a red square\n")  # absent
    out = tmp_path / "report"
    spec = (
        f"manifest_i2i:manifest={manifest},split=test,captions_t2i:manifest={manifest},match=label,split=test"
    )
    argv = ["eval", model_specs["openclip"]["spec"], "--benchmarks", spec, "--out", str(out)]
    with pytest.warns(UserWarning, match="1 of the 9 images of split 'test' are not found"):
        code = main([*argv, "--cache-dir", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "18 images (4 unreadable)" in captured.out  # 9 listed per benchmark: 1 absent + 1 corrupt each
    results = json.loads((out / "results.json").read_text())["models"][0]["results"]
    assert {k: (r["images"], r["unreadable"]) for k, r in results.items()} == {
        "manifest_i2i": (9, 2),
        "captions_t2i": (9, 2),
    }
    assert 0 <= results["captions_t2i"]["metrics"]["recall@1"] <= 100


def test_manifest_i2i_gallery_queries_only_the_split_against_split_plus_gallery(tmp_path):
    """``gallery=train``: the val rows query, the train rows are only searched, the query itself is no
    hit, and the table reads the mean AP of the queries (``map/queries``)."""
    rows = [
        {"path": "t1.png", "label": "a", "split": "train"},
        {"path": "v1.png", "label": "a", "split": "val"},
        {"path": "t2.png", "label": "b", "split": "train"},
        {"path": "v2.png", "label": "b", "split": "val"},
        {"path": "x.png", "label": "c", "split": "test"},
    ]
    for r in rows:
        Image.new("RGB", (8, 8)).save(tmp_path / r["path"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    bench = create_benchmark("manifest_i2i", manifest=str(manifest), split="val", gallery="train")
    data = bench.load(tmp_path)
    assert bench.table1_metric == "map/queries"
    assert [p.name for p in data.images.paths] == ["v1.png", "v2.png", "t1.png", "t2.png"]
    assert data.images.labels.tolist() == [0, 1, 0, 1]
    assert data.subsets == (("queries", 0, 2),) and data.include_self is False
    plain = create_benchmark("manifest_i2i", manifest=str(manifest), split="val")
    assert plain.table1_metric == "map" and plain.load(tmp_path).include_self is True


def _plain(x):
    """Loaded benchmark data as plain Python values (dataclasses by field, arrays as lists)."""
    if dataclasses.is_dataclass(x):
        return (type(x).__name__, [(f.name, _plain(getattr(x, f.name))) for f in dataclasses.fields(x)])
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def test_the_benchmarks_of_one_evaluation_parse_their_manifest_once(tmp_path, monkeypatch):
    """mcip fit's four benchmarks over one catalogue: inside ``manifests_read_once`` the file is parsed
    once and every benchmark's data equals its own load outside the block; outside, each parses again."""
    from mcip.eval.benchmarks import manifest_data

    manifest, names = _one_set_two_layouts(tmp_path)
    specs = [
        ("manifest_i2i", {"manifest": manifest, "split": "test"}),
        ("manifest_knn", {"manifest": manifest, "index": "train", "query": "test"}),
        ("manifest_zeroshot", {"manifest": manifest, "split": "test", "names": names}),
        ("captions_t2i", {"manifest": manifest, "split": "test", "match": "label", "names": names}),
    ]
    benchmarks = [create_benchmark(n, **o) for n, o in specs]
    parsed = []
    real = manifest_data.read_manifest
    monkeypatch.setattr(manifest_data, "read_manifest", lambda *a, **k: parsed.append(a[0]) or real(*a, **k))
    alone = [b.load(tmp_path) for b in benchmarks]
    assert len(parsed) == 4
    parsed.clear()
    with manifest_data.manifests_read_once():
        shared = [b.load(tmp_path) for b in benchmarks]
    assert parsed == [manifest]
    assert _plain(shared) == _plain(alone)  # the same paths, labels, captions, arrays
    (tmp_path / "imgs" / "test" / "red" / "0.png").unlink()  # which files exist is checked each time
    with manifest_data.manifests_read_once(), pytest.warns(UserWarning, match="1 of the 8 images"):
        again = create_benchmark(*specs[0][:1], **specs[0][1]).load(tmp_path)
    assert again.images.skipped == 1 and len(again.images.paths) == len(alone[0].images.paths) - 1
