"""A run killed with SIGKILL mid-epoch and resumed ends with the weights of the uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mcip.engine.progress import read_metrics
from mcip.train import TrainingCheckpoints, load_state
from tests.train.resume_run import BATCHES_PER_EPOCH, run
from tests.train.toy import weights

ROOT = Path(__file__).resolve().parents[2]


def _start_and_kill(run_dir: Path, log: Path) -> None:
    """Start the run in a subprocess, SIGKILL it shortly after checkpoint step 4 appeared."""
    command = [sys.executable, "-m", "tests.train.resume_run", str(run_dir), "--sleep", "0.1"]
    with open(log, "wb") as output:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    ckpts, deadline = TrainingCheckpoints(run_dir), time.monotonic() + 120
    try:
        while not ckpts.path_for(4).exists():
            assert proc.poll() is None, f"the run ended before it was killed:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no checkpoint at step 4 after 120 s"
            time.sleep(0.01)
        time.sleep(0.15)  # about one more step: the kill lands in the middle of training, not in a save
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(tmp_path) -> None:
    reference, expected = run(tmp_path / "reference")
    run_dir = tmp_path / "killed"
    _start_and_kill(run_dir, tmp_path / "log.txt")
    state = load_state(TrainingCheckpoints(run_dir).latest())
    assert 0 < state["batch_in_epoch"] < BATCHES_PER_EPOCH and state["epoch"] == 0  # mid-epoch
    assert state["step"] < expected.steps

    resumed, result = run(run_dir, resume=True)
    torch.testing.assert_close(weights(resumed), weights(reference))
    assert (result.steps, result.epochs_done, result.best_step) == (expected.steps, 2, expected.best_step)
    assert result.best_metric == pytest.approx(expected.best_metric)
    torch.testing.assert_close(load_state(result.best_checkpoint)["task"], weights_at_best(expected))

    def val(path: Path) -> dict[int, float]:
        return {r["step"]: r["val/acc"] for r in read_metrics(path / "metrics.jsonl") if "val/acc" in r}

    assert val(run_dir) == pytest.approx(val(tmp_path / "reference"))
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps))  # the records of the lost steps were dropped, not repeated


def weights_at_best(result) -> dict[str, torch.Tensor]:
    return load_state(result.best_checkpoint)["task"]
