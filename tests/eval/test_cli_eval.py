"""`mcip eval` and `mcip eval embeddings` through the CLI entry point."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mcip.cli import main


def test_table1_without_data_lists_every_download_before_loading_a_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mcip.eval.runner.load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert main(["eval", "no-such-model", "--benchmarks", "table1", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        "14 benchmark(s) have no data" in err
        and "gpr1200" in err
        and "coco" in err
        and "--skip-missing" in err
    )


def test_eval_generic_folder_benchmarks_end_to_end(model_specs, tmp_path, capsys):
    images = tmp_path / "imgs"
    for c, rgb in enumerate([(200, 20, 20), (20, 20, 200)]):
        for i in range(3):
            (images / f"class{c}").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20 + i, 20), rgb).save(images / f"class{c}" / f"{i}.png")
    out = tmp_path / "report"
    code = main(
        [
            "eval",
            model_specs["openclip"]["spec"],
            "--benchmarks",
            f"folder_i2i:path={images},folder_knn:index={images},queries={images}",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert (
        "| model | folder_i2i |" in printed and "18 images (0 unreadable)" in printed
    )  # 6 + 6 index + 6 queries
    data = json.loads((out / "results.json").read_text())
    assert set(data["models"][0]["results"]) == {"folder_i2i", "folder_knn"}
    assert (out / "table1.csv").is_file() and (out / "table1.md").is_file()


def test_eval_embeddings_json(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    labels = np.repeat(np.arange(4), 5)
    emb = (centres[labels] + 0.01 * rng.normal(size=(20, 8))).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    np.save(tmp_path / "l.npy", labels)
    code = main(
        [
            "eval",
            "embeddings",
            "--protocol",
            "instre",
            "--embeddings",
            str(tmp_path / "e.npy"),
            "--labels",
            str(tmp_path / "l.npy"),
            "--json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"map": 100.0}


def test_eval_embeddings_missing_flag_exits_2(tmp_path, capsys):
    np.save(tmp_path / "e.npy", np.eye(3, dtype=np.float32))
    assert main(["eval", "embeddings", "--protocol", "cub", "--embeddings", str(tmp_path / "e.npy")]) == 2
    assert "--labels" in capsys.readouterr().err


def test_two_benchmarks_with_one_name_get_distinct_columns(model_specs, tmp_path, capsys):
    for sub in ("a", "b"):
        for c in range(2):
            (tmp_path / sub / f"c{c}").mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (16, 16), (100 * c, 50, 50 + i)).save(tmp_path / sub / f"c{c}" / f"{i}.png")
    spec = f"folder_i2i:path={tmp_path / 'a'},folder_i2i:path={tmp_path / 'b'}"
    assert (
        main(
            [
                "eval",
                model_specs["openclip"]["spec"],
                "--benchmarks",
                spec,
                "--out",
                str(tmp_path / "o"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    assert len(data["models"][0]["results"]) == 2
