"""Stages end to end: through the CLI, under torchrun with 2 CPU ranks, and the paper's effect in miniature."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import mcip
from mcip.cli import main
from mcip.engine.validate import encode_records
from mcip.eval.metrics import retrieval_average_precision
from tests.train.synth import make_dataset
from tests.train.test_stages import FAST


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth_runs"), per_class=6)


@pytest.fixture
def tiny_base(tiny_openclip, tmp_path):
    torch.manual_seed(0)
    return mcip.save_model(mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path / "base")


def test_cli_train_pipeline_prints_a_summary(tiny_base, synth, tmp_path, capsys):
    args = [
        "train",
        "--quiet",
        "--set",
        "pipeline=mcip+rea",
        "--set",
        f"model.spec={tiny_base}",
        "--set",
        f"data.train={synth}",
        "--set",
        f"out={tmp_path / 'run'}",
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    for item in FAST:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mcip" in out and "realign" in out and str(tmp_path / "run" / "02-realign" / "model") in out
    summary = json.loads((tmp_path / "run" / "01-mcip" / "summary.json").read_text())
    assert summary["steps"] == 3


def test_cli_train_bad_config_exits_2(capsys):
    assert main(["train", "--set", "stage=gpr"]) == 2
    assert "--set" in capsys.readouterr().err


def test_cli_lists_shipped_configs(capsys):
    assert main(["train", "--list-configs"]) == 0
    assert "2sft-vit-l-14-336" in capsys.readouterr().out


@pytest.mark.ddp
def test_mcip_stage_under_torchrun_with_two_cpu_ranks(tiny_base, synth, tmp_path):
    sets = [
        "stage=mcip",
        f"model.spec={tiny_base}",
        f"data.train={synth}",
        f"out={tmp_path / 'ddp'}",
        f"cache_dir={tmp_path / 'cache'}",
        *[s for s in FAST if not s.startswith("data.batch_size")],
        "data.batch_size=4",
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "mcip.cli",
        "train",
        "--quiet",
    ]
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = mcip.load_model(tmp_path / "ddp" / "model")
    base = mcip.load_model(tiny_base)
    assert not torch.equal(trained.net.visual.proj, base.net.visual.proj)
    assert torch.equal(trained.net.text_projection, base.net.text_projection)
    caches = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    # the train captions' embeddings (float16) and the val captions' (float32, for validation), each
    # computed once, by rank 0
    assert sorted(json.loads((p / "complete.json").read_text())["dtype"] for p in caches) == [
        "float16",
        "float32",
    ]


@pytest.mark.slow
def test_the_papers_effect_in_miniature(tiny_openclip, tmp_path):
    """Classes are colour x shape and captions only name the shape. Held out: three triangles that differ
    only in colour, and a purple circle. Starting from an aligned model, GPR-FT and MCIP raise I2I mAP on
    these unseen classes; after MCIP, text-to-image precision (a caption's shape among the top 10 images)
    stays within a few points of the start. Fixed seeds; the measured values are in the assertion messages."""
    train = make_dataset(tmp_path / "train", per_class=16, seed=1)
    held_out = mcip.data.load_records(make_dataset(tmp_path / "test", per_class=16, seed=2, held_out=True))
    torch.manual_seed(0)
    base = mcip.save_model(mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path / "base")
    loop = [
        "data.batch_size=32",
        "loop.precision=fp32",
        "data.num_workers=0",
        "loop.log_every=50",
        "loop.checkpoint_every=1000",
        "data.val_fraction=0.1",
    ]
    # the starting point: a CLIP-like model aligned on the shape captions (as pretraining would give)
    start = _run(
        "align",
        base,
        train,
        tmp_path,
        [*loop, "loop.max_steps=150", "optim.lr=3e-3"],
        "align_parts=[image_encoder, image_projector, text_encoder, text_projector, logit_scale]",
    )
    fine_tune = [*loop, "loop.max_steps=150", "optim.lr=5e-3", "optim.head_lr_mult=10", "loss.scale=16"]
    gpr = _run("gpr", start, train, tmp_path / "gpr", fine_tune)
    mcip_model = _run("mcip", start, train, tmp_path / "mcip", fine_tune)

    def scores(path):
        model = mcip.load_model(path)
        emb, rows = encode_records(model, held_out)
        names = [held_out[i].label for i in rows.tolist()]
        labels = torch.tensor([sorted(set(names)).index(n) for n in names])
        i2i = float(retrieval_average_precision(emb, labels).nanmean())
        shapes = [n.split("_")[1] for n in names]
        queries = sorted(
            {(c, n.split("_")[1]) for r in held_out for c, n in [(r.captions[0], r.label)]}
            | {(r.captions[1], r.label.split("_")[1]) for r in held_out}
        )
        with torch.no_grad():
            text = model.encode_text([q for q, _ in queries])
        top = (text @ emb.T).topk(10, dim=1).indices
        hits = [
            shapes[j] == shape for (_, shape), row in zip(queries, top, strict=True) for j in row.tolist()
        ]
        return i2i, sum(hits) / len(hits)

    (i2i_0, t2i_0), (i2i_g, _), (i2i_m, t2i_m) = scores(start), scores(gpr), scores(mcip_model)
    measured = (
        f"I2I mAP start {i2i_0:.3f}, gpr {i2i_g:.3f}, mcip {i2i_m:.3f}; T2I P@10 {t2i_0:.3f} -> {t2i_m:.3f}"
    )
    print(measured)
    assert i2i_g > i2i_0 + 0.04, measured
    assert i2i_m > i2i_0 + 0.04, measured
    assert t2i_m > t2i_0 - 0.05, measured


def _run(stage, spec, manifest, tmp_path, sets, *extra):
    from mcip.stages.resolve import load_config, plan
    from mcip.stages.run import run_stage

    out = tmp_path / f"run-{stage}"
    raw = load_config(
        None,
        [
            f"stage={stage}",
            f"model.spec={spec}",
            f"data.train={manifest}",
            f"out={out}",
            f"cache_dir={tmp_path / 'cache'}",
            *sets,
            *extra,
        ],
    )
    (cfg,) = plan(raw)
    return run_stage(cfg, progress=False).model_dir
