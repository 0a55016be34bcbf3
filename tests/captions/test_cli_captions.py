"""`mcip captions ...` through the CLI entry point."""

from __future__ import annotations

import json

from PIL import Image

from mcip.cli import main
from mcip.data import read_caption_sidecar


def _folder(tmp_path):
    for label, rgb in (("red_thing", (220, 20, 20)), ("blue_thing", (20, 20, 220))):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (20, 20), rgb).save(tmp_path / "imgs" / label / f"{i}.png")
    return tmp_path / "imgs"


def test_template_retrieve_merge_summary(model_specs, tmp_path, capsys):
    images = _folder(tmp_path)
    t, r, m = tmp_path / "t.jsonl", tmp_path / "r.jsonl", tmp_path / "m.jsonl"
    assert main(["captions", "template", "--images", str(images), "--out", str(t), "--per-image", "2"]) == 0
    assert all(len(v) == 2 for v in read_caption_sidecar(t).values())
    (tmp_path / "pool.txt").write_text("a red thing\na blue thing\na tree\n")
    assert (
        main(
            [
                "captions",
                "retrieve",
                "--images",
                str(images),
                "--pool",
                str(tmp_path / "pool.txt"),
                "--model",
                model_specs["openclip"]["spec"],
                "--top-k",
                "1",
                "--min-sim",
                "-1",
                "--out",
                str(r),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    assert all(len(v) == 1 for v in read_caption_sidecar(r).values())
    assert main(["captions", "merge", str(r), str(t), "--out", str(m), "--max-per-image", "2"]) == 0
    merged = read_caption_sidecar(m)
    assert len(merged) == 4 and all(len(v) == 2 for v in merged.values())
    capsys.readouterr()
    assert main(["captions", "summary", str(m), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4 and summary["per_image"]["max"] == 2


def test_missing_pool_exits_2(model_specs, tmp_path, capsys):
    images = _folder(tmp_path)
    code = main(
        [
            "captions",
            "retrieve",
            "--images",
            str(images),
            "--pool",
            str(tmp_path / "nope.txt"),
            "--model",
            model_specs["openclip"]["spec"],
            "--out",
            str(tmp_path / "o.jsonl"),
        ]
    )
    assert code == 2 and "pool not found" in capsys.readouterr().err
