"""A stage that would repeat a finished run with another selection metric takes that run's model
(mcip.experiment.reuse): the replay of the records is checked by hand, and on real Re-A runs against a
second run actually trained with the other metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mcip
from mcip.experiment.reuse import replay_selection, reuse_reason, reused_run
from mcip.stages.run import run_stage
from tests.train.synth import make_dataset
from tests.train.test_stages import _config


def _records(path: Path, rows: list[dict]) -> Path:
    lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_by_hand(tmp_path):
    """Validations of m at steps 0 (the start), 10, 20, 30, 40 with training records between them."""
    rows = [
        {"step": 0, "val/m": 5.0, "val/t": 1.0},
        {"step": 5, "loss": 1.0},
        {"step": 10, "val/m": 4.0, "val/t": 2.0},
        {"step": 20, "val/m": 6.0, "val/t": 1.5},
        {"step": 30, "val/m": 5.5, "val/t": 3.0},
        {"step": 40, "val/m": 6.0, "val/t": 2.5},
    ]
    path = _records(tmp_path / "metrics.jsonl", rows)
    # m, start a candidate, patience 2: best 5 (step 0); 10 worse (1); 20 best; 30 worse (1); 40 equal (2)
    assert replay_selection(path, "m", 2, True) == (20, 40)
    # without the start: 10 is the first best; 20 best; 30 and 40 no better -> stops at 40
    assert replay_selection(path, "m", 2, False) == (20, 40)
    # patience 1, start a candidate: 10 is worse than the start -> stops at 10 with the start best
    assert replay_selection(path, "m", 1, True) == (0, 10)
    # t: best 2.0 at 10, 1.5 (1), 3.0 best at 30, 2.5 (1): never two in a row -> no stop in the record
    assert replay_selection(path, "t", 2, False) == (30, None)
    assert replay_selection(path, "t", None, False) == (30, None)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth"), per_class=6)


# GPR-FT selecting on I2I (the finished run) and on combined (the run a reuse replaces): on this data
# val I2I moves (T2I does not: the captions name only the shape), so both metrics have something to pick
STAGE, FIRST, SECOND, KEY = "gpr", "i2i", "combined", "combined"
RUN = ["loop.max_steps=null", "loop.epochs=6", "loop.early_stopping_patience=2", "optim.lr=1e-2"]


def _weights(model_dir: Path) -> dict:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_a_rerun_with_another_metric_is_the_finished_run(model_specs, synth, tmp_path):
    """One stage twice from one start, selecting on I2I (the finished run) and on combined (the run a
    reuse replaces, trained here as the reference). Every record (training losses, gradient norms,
    validations) agrees step by step, the replay of the first run's record gives the second's choice and
    stop, and the reused model is the second's, bit for bit."""
    torch.manual_seed(0)
    kwargs = dict(model_specs["composed"])
    base = mcip.save_model(mcip.load_model(kwargs.pop("spec"), **kwargs), tmp_path / "base")
    first_cfg = _config(STAGE, base, synth, tmp_path / "a", *RUN, f"loop.select={FIRST}")
    second_cfg = _config(STAGE, base, synth, tmp_path / "b", *RUN, f"loop.select={SECOND}")
    first = run_stage(first_cfg, progress=False)
    second = run_stage(second_cfg, progress=False)

    def records(result):
        keep = ("step", "loss", "grad_norm", "val/i2i_map", "val/t2i_r5", "val/combined")
        lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: r[k] for k in keep if k in r} for r in map(json.loads, lines)]

    a, b = records(first), records(second)
    n = min(len(a), len(b))
    assert sum("loss" in r for r in a[:n]) >= 10 and a[:n] == b[:n]  # the metric never changed a step
    best, stop = replay_selection(first.run_dir / "metrics.jsonl", KEY, 2, SECOND == "combined")
    assert (best, stop) == (second.train.best_step, b[-1]["step"])  # where the second run chose and stopped

    reason, facts = reuse_reason(second_cfg, first.run_dir)
    assert reason is not None, facts
    assert (facts["best_step"], facts["kept_step"]) == (second.train.best_step, first.train.best_step)
    third_cfg = _config(STAGE, base, synth, tmp_path / "c", *RUN, f"loop.select={SECOND}")
    reused = reused_run(third_cfg, first.run_dir, reason, facts)
    expected, got = _weights(second.model_dir), _weights(reused)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    meta = json.loads((reused / "mcip_model.json").read_text())["extra"]
    assert (meta["val_metric"], meta["best_step"]) == (KEY, second.train.best_step)
    assert meta["best_metric"] == second.train.best_metric
    assert json.loads((Path(third_cfg.out) / "reused.json").read_text())["best_step"] == best


def test_no_reuse_without_the_same_start_and_settings(model_specs, synth, tmp_path):
    torch.manual_seed(0)
    kwargs = dict(model_specs["composed"])
    spec = kwargs.pop("spec")
    base = mcip.save_model(mcip.load_model(spec, **kwargs), tmp_path / "base")
    torch.manual_seed(1)
    other = mcip.save_model(mcip.load_model(spec, **kwargs), tmp_path / "other")
    first = run_stage(
        _config(STAGE, base, synth, tmp_path / "a", *RUN, f"loop.select={FIRST}"), progress=False
    )
    moved = _config(STAGE, other, synth, tmp_path / "b", *RUN, f"loop.select={SECOND}")
    assert reuse_reason(moved, first.run_dir) == (None, {"why_not": "another starting model"})
    faster = _config(STAGE, base, synth, tmp_path / "c", *RUN, f"loop.select={SECOND}", "optim.lr=5e-2")
    reason, facts = reuse_reason(faster, first.run_dir)
    assert reason is None and facts["why_not"] == "other settings (optim.lr)"
    assert reuse_reason(faster, tmp_path / "nothing") == (None, {"why_not": "no finished run"})
