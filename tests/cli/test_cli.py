"""The CLI in-process (main(argv) -> int) and once through the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcip.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("models", "info", "save", "encode"):
        assert command in out


def test_console_script_runs():
    exe = shutil.which("mcip", path=str(Path(sys.executable).parent))
    assert exe, "the mcip console script is not installed next to this Python (pip install -e .)"
    out = subprocess.run([exe, "models"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "composed:lab" in out.stdout


def test_info_json(model_specs, capsys):
    spec = model_specs["openclip"]["spec"]
    assert main(["info", spec, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["embed_dim"] == 16 and info["backend"] == "openclip"
    assert info["total_parameters"] == sum(info["parameters"].values())


def test_save_then_info_reloads(model_specs, tmp_path, capsys):
    spec = model_specs["openclip"]["spec"]
    assert main(["save", spec, "--out", str(tmp_path / "m"), "--drop-projector"]) == 0
    assert main(["info", str(tmp_path / "m"), "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{") :])
    assert info["embed_dim"] == 32


def test_bad_model_spec_exits_2_with_message(capsys):
    assert main(["info", "nonsense:model"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model spec" in err and "openclip:" in err


def test_encode_folder_skips_corrupt_images(model_specs, tiny_text_tower_dir, tmp_path, capsys):
    images = tmp_path / "images"
    for label, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (images / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40 + i, 40), colour).save(images / label / f"{i}.png")
    (images / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    spec = f"composed:test_efficientnet+{tiny_text_tower_dir}"
    # composed kwargs are not CLI options; the tiny text tower still builds a 512-d composed model
    code = main(
        [
            "encode",
            "--model",
            spec,
            "--images",
            str(images),
            "--out",
            str(out),
            "--quiet",
            "--query",
            "a red square",
        ]
    )
    assert code == 0
    emb = np.load(out / "embeddings.npy")
    summary = json.loads((out / "summary.json").read_text())
    assert emb.shape == (6, 512)
    assert summary["images"] == 6 and summary["skipped"] == 1
    assert "broken.jpg" in next(iter(summary["skipped_files"]))
    assert (out / "images.txt").read_text().splitlines()[0] == "blue/0.png"
    assert 0.0 <= summary["folder_1nn_accuracy"] <= 1.0
    printed = capsys.readouterr().out
    assert "skipped 1 unreadable" in printed and "text 'a red square'" in printed


def test_encode_missing_folder(capsys, tmp_path):
    assert (
        main(
            [
                "encode",
                "--model",
                "composed:lab",
                "--images",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err


def test_encode_leaves_autograd_enabled(model_specs, tmp_path):
    import torch

    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.png")
    main(
        [
            "encode",
            "--model",
            model_specs["openclip"]["spec"],
            "--images",
            str(images),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--query",
            "x",
        ]
    )
    assert torch.is_grad_enabled()


def test_quiet_silences_every_progress_bar_of_the_command(monkeypatch, capsys):
    """--quiet reaches bars the command's own code does not draw (feature caches, library loops)."""
    import argparse

    from tqdm import std
    from tqdm.auto import tqdm

    from mcip.cli._common import run_command

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(std.tqdm, "__init__", std.tqdm.__init__)  # restored after the test
    monkeypatch.setattr(std.tqdm, "_mcip_silenced", False, raising=False)

    def work(args):
        for _ in tqdm(range(3), desc="caching image embeddings"):
            pass
        return 0

    assert run_command(argparse.Namespace(func=work, command="x", quiet=False)) == 0
    assert "caching image embeddings" in capsys.readouterr().err
    assert run_command(argparse.Namespace(func=work, command="x", quiet=True)) == 0
    assert "caching image embeddings" not in capsys.readouterr().err
    assert run_command(argparse.Namespace(func=work, command="x", quiet=False)) == 0  # only while quiet
    assert "caching image embeddings" in capsys.readouterr().err and "TQDM_DISABLE" not in os.environ
