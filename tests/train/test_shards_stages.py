"""``mcip train`` of an MCIP and a Re-A stage from webdataset shards equals the same stage from the manifest
the shards were written from (``mcip data shard --no-shuffle``): the same batches with the same seed, so
the same loss at every step and the same final weights. Tiny random-weight model, tiny synthetic images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mcip
from mcip.cli import main
from mcip.data.captions import write_caption_sidecar
from mcip.engine.progress import read_metrics
from tests.train.synth import make_dataset
from tests.train.test_stages import FAST


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """(manifest.csv of the synthetic problem, the shard folder written from it in order)."""
    root = tmp_path_factory.mktemp("shard_stages")
    manifest = make_dataset(root / "images", per_class=4)
    assert (
        main(
            [
                "data",
                "shard",
                str(manifest),
                "--out",
                str(root / "shards"),
                "--shard-size",
                "10",
                "--no-shuffle",
            ]
        )
        == 0
    )
    return manifest, root / "shards"


@pytest.fixture(scope="module")
def base(tiny_openclip, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return mcip.save_model(
        mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path_factory.mktemp("base") / "m"
    )


def _train(stage: str, base: Path, train: str, out: Path, *extra: str) -> Path:
    """``mcip train`` of ``stage`` (``pipeline=NAME`` when it holds a ``+``) into ``out``."""
    args = ["train", "--quiet"]
    sets = [
        f"{'pipeline' if '+' in stage else 'stage'}={stage}",
        f"model.spec={base}",
        f"data.train={train}",
        f"out={out}",
        f"cache_dir={out}-cache",
    ]
    for item in [*sets, *FAST, "loop.max_steps=4", *extra]:
        args += ["--set", item]
    assert main(args) == 0
    return out


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert rows, "the run logged no loss"
    return [(r["step"], r["loss"]) for r in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    assert _losses(a) == _losses(b)
    left = mcip.load_model(str(a / "model")).net.state_dict()
    right = mcip.load_model(str(b / "model")).net.state_dict()
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


def test_the_shards_hold_the_manifest_in_order(data):
    manifest, shards = data
    from_manifest = mcip.data.load_records(manifest)
    from_shards = mcip.data.load_records(str(shards / "shard-*.tar"))
    assert [(r.id, r.label, r.captions) for r in from_shards] == [
        (r.id, r.label, r.captions) for r in from_manifest
    ]


def test_mcip_stage_from_shards_equals_the_stage_from_the_manifest(data, base, tmp_path):
    manifest, shards = data
    a = _train("mcip", base, str(manifest), tmp_path / "manifest")
    b = _train("mcip", base, str(shards / "shard-{000000..000004}.tar"), tmp_path / "shards")
    _assert_same_run(a, b)
    assert len(_losses(a)) == 4


@pytest.mark.slow
def test_realign_stage_from_shards_equals_the_stage_from_the_manifest(data, base, tmp_path):
    manifest, shards = data
    a = _train("realign", base, str(manifest), tmp_path / "manifest", "data.batch_size=8")
    b = _train("realign", base, str(shards / "*.tar"), tmp_path / "shards", "data.batch_size=8")
    _assert_same_run(a, b)


@pytest.mark.slow
def test_mcip_from_shards_takes_captions_from_a_sidecar_keyed_by_the_record_id(data, base, tmp_path):
    """Shards without captions (the JSON holds no captions) + ``data.captions`` keyed by the records' ids
    train like the manifest with the captions in it."""
    manifest, _ = data
    records = mcip.data.load_records(manifest)
    bare = [mcip.data.ImageRecord(r.id, r.path, r.label) for r in records]
    from mcip.data.shard_writer import shard_records

    shard_records(bare, tmp_path / "bare", shard_size=10, shuffle=False)
    sidecar = tmp_path / "captions.jsonl"
    write_caption_sidecar(sidecar, {r.id: list(r.captions) for r in records})
    a = _train("mcip", base, str(manifest), tmp_path / "manifest")
    b = _train(
        "mcip", base, str(tmp_path / "bare" / "*.tar"), tmp_path / "sidecar", f"data.captions={sidecar}"
    )
    _assert_same_run(a, b)
    assert json.loads((tmp_path / "bare" / "shards.json").read_text())["samples"] == len(records)


@pytest.mark.slow
def test_the_wise_step_validates_on_held_out_shard_samples_as_on_files(data, base, tmp_path):
    """``mcip+wise`` from shards: the val split's images are read by reference; the same alpha curve as
    from the manifest."""
    manifest, shards = data
    a = _train("mcip+wise", base, str(manifest), tmp_path / "manifest", "wise.grid=[0.5,1.0]")
    b = _train("mcip+wise", base, str(shards / "*.tar"), tmp_path / "shards", "wise.grid=[0.5,1.0]")
    curve_a = json.loads((a / "02-wise" / "wise_curve.json").read_text())
    curve_b = json.loads((b / "02-wise" / "wise_curve.json").read_text())
    assert curve_a.pop("finetuned").startswith(str(a)) and curve_b.pop("finetuned").startswith(str(b))
    assert curve_a == curve_b
