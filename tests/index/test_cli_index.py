"""``mcip index ...`` and ``mcip search`` in-process: exit codes and what they print."""

from __future__ import annotations

import json

import pytest

from mcip.cli import main


@pytest.fixture
def built(model_dir, photos, tmp_path, capsys):
    out = tmp_path / "index"
    argv = ["index", "build", "--model", str(model_dir), "--images", str(photos), "--out", str(out)]
    assert main([*argv, "--workers", "0", "--quiet", "--batch-size", "5"]) == 0
    printed = capsys.readouterr().out
    assert "build: 16 image(s) encoded and indexed; 16 in" in printed and "skipped 1 unreadable" in printed
    assert "broken.png" in printed and "mcip search --index" in printed
    return out


def test_build_search_info_add_check(built, model_dir, photos, tmp_path, capsys):
    assert main(["search", "--index", str(built), "--text", "a red dog", "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "label", "path"] and len(lines) == 4
    assert lines[1].split()[0] == "1" and str(photos) in lines[1]

    image = photos / "blue" / "2.png"
    assert (
        main(
            ["search", "--index", str(built), "--image", str(image), "--text", "x", "--alpha", "1", "--json"]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == "blue/2.png" and hits[0]["rank"] == 1 and len(hits) == 10
    assert (
        set(hits[0]) == {"rank", "score", "id", "path", "metadata"} and hits[0]["metadata"]["label"] == "blue"
    )

    assert main(["search", "--index", str(built), "--id", "red/0.png", "--k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "red/0.png"

    assert main(["index", "info", "--index", str(built)]) == 0
    printed = capsys.readouterr().out
    assert "16 images, D=16 float16" in printed and "backend   faiss  factory Flat" in printed
    assert main(["index", "info", "--index", str(built), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 16

    (tmp_path / "more").mkdir()
    (photos / "blue" / "2.png").rename(tmp_path / "more" / "new.png")
    assert (
        main(
            [
                "index",
                "add",
                "--index",
                str(built),
                "--images",
                str(tmp_path / "more"),
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert "add: 1 image(s) encoded and indexed; 17 in" in capsys.readouterr().out

    manifest = tmp_path / "captions.jsonl"
    manifest.write_text(json.dumps({"id": "red/1.png", "captions": ["a red square"]}) + "\n")
    assert main(["index", "check", "--index", str(built), "--captions", str(manifest)]) == 0
    captured = capsys.readouterr()
    assert "recall@10" in captured.out and "verdict: undetermined" in captured.out
    assert "too few" in captured.err
    assert main(["index", "check", "--index", str(built), "--captions", str(manifest), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--text", "   "], "The text query is empty"),
        (["search"], "Give a text query, an image, or both"),
        (["search", "--text", "a", "--k", "0"], "k must be an integer from 1 to 1000"),
        (["search", "--image", "/no/such.png"], "Query image not found"),
        (["search", "--id", "nope"], "No image with id 'nope'"),
        (["search", "--id", "red/0.png", "--text", "a"], "do not combine it"),
        (["search", "--text", "a", "--search-params", "nprobe=3"], "Cannot set search parameters"),
    ],
)
def test_bad_queries_exit_2_with_the_reason(built, capsys, argv, message):
    argv = [argv[0], "--index", str(built), *argv[1:]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_builds_and_missing_indexes_exit_2(model_dir, photos, other_model_dir, tmp_path, capsys):
    out = str(tmp_path / "index")
    argv = [
        "index",
        "build",
        "--model",
        str(model_dir),
        "--images",
        str(photos),
        "--out",
        out,
        "--workers",
        "0",
    ]
    assert main([*argv, "--factory", "IVF9999,Flat", "--quiet"]) == 2
    assert "9999 inverted lists" in capsys.readouterr().err
    assert main(["search", "--index", str(tmp_path / "nowhere"), "--text", "a"]) == 2
    assert "is not an mcip index" in capsys.readouterr().err
    assert main([*argv, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", "--index", out, "--text", "a", "--model", str(other_model_dir)]) == 2
    assert "image tower fingerprint" in capsys.readouterr().err
