"""``mcip index`` on text files users really have (Latin-1, UTF-16, Excel's UTF-8 with BOM, odd labels),
and output piped into a reader that stops early: exit 2 with a message, or success, never a traceback."""

from __future__ import annotations

import codecs
import json
import re
import subprocess
import sys

import pytest

from mcip.cli import EXIT_BROKEN_PIPE, main
from mcip.index import build_index
from tests.index.helpers import write_pngs

CSV = "path,label\nimg/0.png,café\nimg/1.png,thé\nimg/2.png,naïve\n"
LATIN1_AT = CSV.encode("latin-1").index("é".encode("latin-1"))  # the first byte UTF-8 cannot decode


@pytest.fixture
def images(tmp_path):
    write_pngs(tmp_path / "img", [f"{i}.png" for i in range(3)])
    return tmp_path


def _build(model_dir, manifest, out, *extra) -> int:
    argv = ["index", "build", "--model", str(model_dir), "--images", str(manifest), "--out", str(out)]
    return main([*argv, "--workers", "0", "--quiet", *extra])


@pytest.mark.parametrize(
    ("payload", "extra", "message"),
    [
        (CSV.encode("latin-1"), [], rf"m.csv: not valid utf-8 text at byte {LATIN1_AT} \(line 2: e9"),
        (CSV.encode("utf-16-le"), [], "byte 1 is a NUL byte.*--encoding utf-16-le"),
        (CSV.encode("utf-8"), ["--encoding", "klingon"], "Unknown text encoding 'klingon'"),
        (b"path,label\nimg/0.png,\x81\n", ["--encoding", "cp1252"], "not valid cp1252 text at byte 21"),
        (b'{"path": "img/0.png", "label": null}\n', [], r"row 1: 'label' is null"),
        (b'{"path": "img/0.png", "label": ["a"]}\n', [], r"row 1: 'label' must be a string or a number"),
    ],
)
def test_bad_text_inputs_exit_2_with_the_fix(model_dir, images, capsys, payload, extra, message):
    manifest = images / ("m.jsonl" if payload.startswith(b"{") else "m.csv")
    manifest.write_bytes(payload)
    assert _build(model_dir, manifest, images / "index", *extra) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("mcip index: error: ")
    assert re.search(message, err), err
    assert not (images / "index").exists()


@pytest.mark.parametrize(
    ("payload", "extra"),
    [
        (CSV.encode("latin-1"), ["--encoding", "latin-1"]),
        (codecs.BOM_UTF16_LE + CSV.encode("utf-16-le"), []),
        (codecs.BOM_UTF16_BE + CSV.encode("utf-16-be"), []),
        (codecs.BOM_UTF8 + CSV.encode("utf-8"), []),
        (CSV.encode("utf-16-le"), ["--encoding", "utf-16-le"]),
    ],
)
def test_other_encodings_build(model_dir, images, capsys, payload, extra):
    (images / "m.csv").write_bytes(payload)
    assert _build(model_dir, images / "m.csv", images / "index", *extra, "--json") == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3
    labels = json.loads((images / "index" / "columns.json").read_text(encoding="utf-8"))["labels"]
    assert labels == ["café", "thé", "naïve"]


def test_check_captions_in_latin1(model_dir, images, capsys):
    build_index(model_dir, images / "img", images / "index", progress=False)
    captions = images / "caps.jsonl"
    captions.write_bytes(
        json.dumps({"id": "0.png", "captions": ["un café"]}, ensure_ascii=False).encode("latin-1")
    )
    argv = ["index", "check", "--index", str(images / "index"), "--captions", str(captions), "--json"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "caps.jsonl: not valid utf-8 text at byte" in err and "--encoding" in err and "Traceback" not in err
    )
    assert main([*argv, "--encoding", "latin-1"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 1


def test_add_takes_an_encoding_too(model_dir, images, capsys):
    build_index(model_dir, images / "img", images / "index", progress=False)
    write_pngs(images / "new", ["x.png"], seed=3)
    (images / "m.csv").write_bytes("path,label\nnew/x.png,crème\n".encode("latin-1"))
    argv = ["index", "add", "--index", str(images / "index"), "--images", str(images / "m.csv"), "--quiet"]
    assert main([*argv, "--workers", "0"]) == 2
    assert "not valid utf-8 text" in capsys.readouterr().err
    assert main([*argv, "--workers", "0", "--encoding", "latin-1"]) == 0
    assert "add: 1 image(s)" in capsys.readouterr().out


def test_mixed_label_types_warn(model_dir, images):
    manifest = images / "m.jsonl"
    rows = [{"path": "img/0.png", "label": 1}, {"path": "img/1.png", "label": "1"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match="labels mix numbers"):
        assert _build(model_dir, manifest, images / "index") == 0


def test_output_into_a_closed_pipe_ends_quietly(model_dir, images):
    """``mcip index info --index X | head -1``: the reader is gone before mcip writes; no traceback."""
    build_index(model_dir, images / "img", images / "index", progress=False)
    command = [sys.executable, "-m", "mcip.cli", "index", "info", "--index", str(images / "index"), "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as head does after its first line, here before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == EXIT_BROKEN_PIPE
    assert err == "", err
