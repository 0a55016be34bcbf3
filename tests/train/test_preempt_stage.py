"""A real ``mcip train`` gpr stage (random crop, flip and colour jitter; 2 data-loader workers) in
subprocesses: two runs of one config end with bitwise-identical weights, and so does a run killed
(SIGKILL) or stopped (SIGTERM) at a random step and resumed with ``--resume``. SIGTERM writes a
checkpoint of the step it interrupted and exits 143."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mcip
from mcip.engine.progress import read_metrics
from mcip.train import TrainingCheckpoints, load_state
from tests.train.synth import make_dataset

ROOT = Path(__file__).resolve().parents[2]
STEPS, CHECKPOINT_EVERY = 16, 3  # 6 batches per epoch: kills land mid-epoch and across epochs
SETTINGS = [
    "stage=gpr",
    f"loop.max_steps={STEPS}",
    "loop.log_every=1",
    f"loop.checkpoint_every={CHECKPOINT_EVERY}",
    "loop.precision=fp32",
    "data.batch_size=8",
    "data.num_workers=2",
    "data.val_fraction=0.25",
    "optim.lr=1e-3",
]


@pytest.fixture(scope="module")
def setup(tiny_openclip, tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("preempt")
    torch.manual_seed(0)
    base = mcip.save_model(mcip.load_model(f"openclip:{tiny_openclip}"), work / "base")
    return {"base": Path(base), "synth": make_dataset(work / "synth", per_class=6), "work": work}


def _train_args(setup: dict[str, Path], out: Path) -> list[str]:
    sets = [f"model.spec={setup['base']}", f"data.train={setup['synth']}", f"out={out}"]
    sets += [f"cache_dir={setup['work'] / 'cache'}", *SETTINGS]
    return ["--quiet", *(arg for item in sets for arg in ("--set", item))]


def _start(args: list[str], log: Path, sleep: float = 0.0) -> subprocess.Popen:
    """``mcip train ARGS`` in a subprocess (output to a file: loader workers may outlive a SIGKILL)."""
    command = [sys.executable, "-m", "tests.train.preempt_run", "--sleep", str(sleep), "--", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as output:
        return subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, env=env)


def _run(args: list[str], log: Path) -> str:
    proc = _start(args, log)
    assert proc.wait(timeout=500) == 0, log.read_text()[-3000:]
    return log.read_text()


def _logged_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    return (
        max((r.get("step", 0) for r in read_metrics(path) if "loss" in r), default=0) if path.exists() else 0
    )


def _signal_at(proc: subprocess.Popen, out: Path, step: int, signum: int, log: Path) -> tuple[int, int]:
    """Send ``signum`` once the run logged ``step``; returns the steps logged just before and after
    sending it (the step in progress then was at most the second plus one)."""
    deadline = time.monotonic() + 400
    while _logged_step(out) < step:
        assert proc.poll() is None, f"the run ended before step {step}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no step {step} after 400 s"
        time.sleep(0.02)
    before = _logged_step(out)
    proc.send_signal(signum)
    after = _logged_step(out)
    proc.wait(timeout=300)
    return before, after


def _final(out: Path) -> dict[str, torch.Tensor]:
    return load_state(TrainingCheckpoints(out).path_for(STEPS))["task"]


def _bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _resume(out: Path, log: Path) -> str:
    return _run(["--quiet", str(out / "config.yaml"), "--resume"], log)


@pytest.fixture(scope="module")
def reference(setup) -> dict[str, torch.Tensor]:
    out = setup["work"] / "reference"
    _run(_train_args(setup, out), setup["work"] / "reference.log")
    return _final(out)


@pytest.mark.slow
def test_two_runs_of_one_config_end_with_the_same_weights(setup, reference, tmp_path) -> None:
    _run(_train_args(setup, tmp_path / "again"), tmp_path / "again.log")
    assert _bitwise_equal(_final(tmp_path / "again"), reference)


@pytest.mark.slow
def test_killed_at_a_random_step_then_resumed_ends_with_the_same_weights(setup, reference, tmp_path) -> None:
    out, step = tmp_path / "killed", random.randint(CHECKPOINT_EVERY + 1, STEPS - 4)
    proc = _start(_train_args(setup, out), tmp_path / "run.log", sleep=0.2)
    sent_at, _ = _signal_at(proc, out, step, signal.SIGKILL, tmp_path / "run.log")
    saved = load_state(TrainingCheckpoints(out).latest())["step"]
    where = f"SIGKILL after step {sent_at} (aimed at {step}); last checkpoint at step {saved}"
    assert proc.returncode == -signal.SIGKILL and CHECKPOINT_EVERY <= saved < STEPS, where
    text = _resume(out, tmp_path / "resume.log")
    assert f"resumed from step {saved} of {STEPS}" in text, where
    assert _bitwise_equal(_final(out), reference), where


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_exits_143_and_resumes_exactly(setup, reference, tmp_path) -> None:
    out, step, log = tmp_path / "stopped", random.randint(1, STEPS - 4), tmp_path / "run.log"
    proc = _start(_train_args(setup, out), log, sleep=0.2)
    sent_at, logged = _signal_at(proc, out, step, signal.SIGTERM, log)
    stopped = _logged_step(out)
    where = f"SIGTERM after step {sent_at} (aimed at {step}), stopped after step {stopped}"
    assert proc.returncode == 143, f"{where}\n{log.read_text()[-3000:]}"
    assert TrainingCheckpoints(out).latest() == TrainingCheckpoints(out).path_for(stopped), where
    assert sent_at <= stopped <= logged + 1, where  # the step in progress was finished, no more
    text = log.read_text()
    assert f"SIGTERM received: training stopped after step {stopped} of {STEPS}" in text, where
    assert f"Resume with: mcip train {out / 'config.yaml'} --resume" in text, where
    assert f"resumed from step {stopped} of {STEPS}" in _resume(out, tmp_path / "resume.log"), where
    assert _bitwise_equal(_final(out), reference), where
