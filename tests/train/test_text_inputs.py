"""``mcip train`` on manifests and caption sidecars in other encodings, and on images it cannot read:
exit 2 with the file, the byte offset or the unreadable images named; ``data.encoding`` reads them."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import mcip
from mcip.cli import main
from tests.train.synth import make_dataset
from tests.train.test_stages import FAST


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth_text"), per_class=6)


@pytest.fixture(scope="module")
def tiny_base(tiny_openclip, tmp_path_factory):
    torch.manual_seed(0)
    return mcip.save_model(
        mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path_factory.mktemp("b") / "base"
    )


def _latin1_copy(synth, name="latin1.csv"):
    """The synthetic manifest with accented labels, saved as Latin-1 next to it."""
    with open(synth, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    path = synth.parent / name
    with open(path, "w", newline="", encoding="latin-1") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": r["label"] + "_é"} for r in rows)
    return path


def _train(tiny_base, manifest, tmp_path, *sets) -> int:
    args = ["train", "--quiet", "--set", "stage=gpr", "--set", f"model.spec={tiny_base}"]
    args += ["--set", f"data.train={manifest}", "--set", f"out={tmp_path / 'run'}"]
    for item in [*FAST, f"cache_dir={tmp_path / 'cache'}", *sets]:
        args += ["--set", item]
    return main(args)


def test_a_latin1_manifest_is_named_and_data_encoding_reads_it(tiny_base, synth, tmp_path, capsys):
    manifest = _latin1_copy(synth)
    assert _train(tiny_base, manifest, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"{manifest}: not valid utf-8 text at byte " in err and "(line 2: e9" in err
    assert "data.encoding=NAME" in err and "Traceback" not in err
    assert _train(tiny_base, manifest, tmp_path, "data.encoding=latin-1") == 0
    saved = json.loads((tmp_path / "run" / "model" / "mcip_model.json").read_text())
    assert saved["extra"]["config"]["data"]["encoding"] == "latin-1"


def test_a_latin1_caption_sidecar_is_named(tiny_base, synth, tmp_path, capsys):
    sidecar = tmp_path / "caps.jsonl"
    sidecar.write_bytes(
        json.dumps({"id": "red_circle/0.png", "captions": ["un café"]}, ensure_ascii=False).encode("latin-1")
    )
    assert _train(tiny_base, synth, tmp_path, f"data.captions={sidecar}") == 2
    err = capsys.readouterr().err
    assert f"{sidecar}: not valid utf-8 text at byte" in err and "Traceback" not in err


def test_an_unknown_encoding_fails_before_the_model_loads(tiny_base, synth, tmp_path, capsys):
    assert _train("no-such-model", synth, tmp_path, "data.encoding=klingon") == 2
    assert "Unknown text encoding 'klingon'" in capsys.readouterr().err


def test_unreadable_images_are_named_when_there_are_too_few(tiny_base, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nmissing.png,a\nbroken.png,b\n")
    assert _train(tiny_base, manifest, tmp_path, "data.val_fraction=0", "data.batch_size=16") == 2
    err = capsys.readouterr().err
    assert "Only 2 training items for a batch of 16" in err
    assert "2 of the first 2 images of" in err and "missing.png" in err and "broken.png" in err
    assert "Traceback" not in err and "lower data.batch_size" in err
