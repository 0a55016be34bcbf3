"""Atomic checkpoint files, keep-last pruning, the best checkpoint, RNG capture, model selection."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from mcip.engine.checkpoint import (
    Selection,
    TrainingCheckpoints,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
)
from mcip.errors import ConfigError, InputError


def test_save_and_load_round_trip(tmp_path) -> None:
    state = {"w": torch.arange(4.0), "step": 3, "cfg": {"betas": (0.9, 0.99), "name": "x", "none": None}}
    path = save_state(tmp_path / "a" / "state.pt", state)
    loaded = load_state(path)
    torch.testing.assert_close(loaded["w"], state["w"])
    assert loaded["cfg"] == state["cfg"] and loaded["step"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]  # no temporary file left


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    path = save_state(tmp_path / "state.pt", {"v": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_state(path, {"v": 2, "bad": Unpicklable()})
    assert load_state(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["state.pt"]


def test_missing_and_corrupt_files_say_what_to_do(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_state(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="delete it"):
        load_state(tmp_path / "bad.pt")


def test_latest_ignores_a_half_written_temporary_file(tmp_path) -> None:
    ckpts = TrainingCheckpoints(tmp_path)
    assert ckpts.latest() is None and ckpts.best() is None
    ckpts.save(4, {"step": 4})
    leftover = ckpts.dir / ".step_00000006.pt.x1y2z3.tmp"  # what a killed save_state leaves
    leftover.write_bytes(b"half a checkpo")
    assert ckpts.latest() == ckpts.path_for(4)
    ckpts.save(5, {"step": 5})
    assert not leftover.exists()  # the next save cleans it up
    assert load_state(ckpts.latest())["step"] == 5


def test_keep_last_prunes_and_best_survives(tmp_path) -> None:
    ckpts = TrainingCheckpoints(tmp_path, keep_last=2)
    metrics = {1: 0.1, 2: 0.5, 3: 0.3, 4: None, 5: 0.4, 6: float("nan")}
    for step, metric in metrics.items():
        ckpts.save(step, {"step": step, "w": torch.full((2,), float(step))}, metric=metric)
    assert [s for s, _ in ckpts.steps()] == [5, 6]
    assert ckpts.best_record() == {"step": 2, "metric": 0.5}
    assert load_state(ckpts.best())["step"] == 2  # its step file is gone, best.pt is not
    ckpts.save(7, {"step": 7}, metric=0.9)
    assert load_state(ckpts.best())["step"] == 7 and ckpts.best_record()["metric"] == 0.9


def test_keep_last_validation(tmp_path) -> None:
    with pytest.raises(ConfigError, match="keep_last"):
        TrainingCheckpoints(tmp_path, keep_last=0)


def test_rng_state_round_trip(tmp_path) -> None:
    state = rng_state()
    save_state(tmp_path / "rng.pt", {"rng": state})
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(load_state(tmp_path / "rng.pt")["rng"])  # weights_only load works for RNG states
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == second[:2]
    torch.testing.assert_close(first[2], second[2], rtol=0, atol=0)


def test_selection_tracks_the_best_and_stops_early() -> None:
    selection = Selection(metric="acc", patience=2)
    assert selection.update({"acc": 0.5}, step=1)
    assert not selection.update({"acc": 0.4}, step=2) and not selection.stopped
    assert selection.update({"acc": 0.6}, step=3) and selection.bad == 0
    assert not selection.update({"acc": float("nan")}, step=4)
    assert not selection.update({"acc": 0.6}, step=5)  # equal is not better
    assert selection.stopped and (selection.best, selection.best_step) == (0.6, 3)
    with pytest.raises(ConfigError, match="not among the validation results"):
        selection.update({"loss": 1.0}, step=6)
