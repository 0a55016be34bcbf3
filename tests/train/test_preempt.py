"""SIGTERM, SIGUSR1 and Ctrl-C stop training after the current step with a checkpoint of that step; the
resumed run ends with the uninterrupted run's weights, bitwise."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from mcip.cli import run_command
from mcip.engine.distributed import cleanup, init_distributed
from mcip.engine.preempt import StopSignals
from mcip.train import LoopConfig, OptimConfig, TrainingCheckpoints, TrainingInterrupted, load_state, train
from tests.train.toy import ToyData, accuracy_validator, make_task, weights

OPTIM = OptimConfig(lr=1e-2, min_lr=1e-4, warmup_steps=2)
LOOP = LoopConfig(epochs=2, checkpoint_every=100, log_every=1, seed=5)  # 2 x 10 steps


class SignalAt(nn.Module):
    """The toy task (dropout: the result depends on the RNG streams); during training forward call
    ``at`` (step ``at``) it sends ``signums`` to its own process."""

    def __init__(self, at: int | None = None, *signums: int) -> None:
        super().__init__()
        self.inner, self.at, self.signums, self.calls = make_task(seed=1, dropout=0.2), at, signums, 0

    def forward(self, batch: dict) -> dict:
        self.calls += self.training  # validation (eval mode) does not count
        if self.calls == self.at:
            for signum in self.signums:
                os.kill(os.getpid(), signum)
        return self.inner(batch)


def _data(rank: int = 0, world: int = 1) -> ToyData:
    return ToyData(n=80, batch=8 // world, noise=0.3, seed=3, rank=rank, world=world)


def _train(task: nn.Module, run_dir: Path, resume: bool = False, **kw):
    data = _data(**kw)
    val = accuracy_validator(data)
    return train(
        task, data, OPTIM, LOOP, run_dir, validate=val, val_metric="acc", resume=resume, progress=False
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    task = SignalAt()
    _train(task, tmp_path_factory.mktemp("reference"))
    return weights(task)


def _bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _handlers() -> list:
    return [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)]


@pytest.mark.parametrize(
    ("name", "at", "status"),
    [("SIGTERM", 7, 143), ("SIGUSR1", 10, 138), ("SIGINT", 13, 130)],  # 10: the last step of epoch 0
)
def test_a_stop_signal_checkpoints_the_step_then_resume_matches(
    name, at, status, reference, tmp_path, capsys
):
    before = _handlers()
    with pytest.raises(TrainingInterrupted) as caught:
        _train(SignalAt(at, getattr(signal, name)), tmp_path)
    stop = caught.value
    assert (stop.step, stop.total_steps, stop.exit_status, stop.signal_name) == (at, 20, status, name)
    assert (
        stop.checkpoint
        == TrainingCheckpoints(tmp_path).latest()
        == TrainingCheckpoints(tmp_path).path_for(at)
    )
    assert f"after step {at} of 20" in str(stop) and "resume=True" in str(stop)
    state = load_state(stop.checkpoint)
    assert (state["epoch"], state["batch_in_epoch"]) == ((0, 10) if at == 10 else divmod(at, 10))
    assert _handlers() == before  # restored after training

    resumed = SignalAt()
    result = _train(resumed, tmp_path, resume=True)
    assert f"resumed from step {at} of 20" in capsys.readouterr().out
    assert result.steps == 20
    assert _bitwise_equal(weights(resumed), reference)


def test_a_second_ctrl_c_stops_at_once(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt) as caught:
        _train(SignalAt(4, signal.SIGINT, signal.SIGINT), tmp_path)
    assert type(caught.value) is KeyboardInterrupt  # not the clean stop: step 4 never finished
    assert load_state(TrainingCheckpoints(tmp_path).latest())["step"] == 3


def test_no_handlers_outside_the_main_thread() -> None:
    before, seen = _handlers(), []

    def enter() -> None:
        with StopSignals() as stops:
            seen.append(stops.received)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [None] and _handlers() == before


def test_the_cli_exits_with_128_plus_the_signal_and_says_how_to_resume(tmp_path, capsys) -> None:
    def stopped(args) -> int:
        exc = TrainingInterrupted(signal.SIGTERM, 37, 300, tmp_path / "step_00000037.pt", rank=args.rank)
        exc.resume_command = "mcip train OUT/config.yaml --resume"
        raise exc

    assert run_command(argparse.Namespace(command="train", func=stopped, rank=0)) == 143
    err = capsys.readouterr().err
    assert "SIGTERM received: training stopped after step 37 of 300" in err
    assert "Resume with: mcip train OUT/config.yaml --resume" in err
    assert run_command(argparse.Namespace(command="train", func=stopped, rank=1)) == 143
    assert capsys.readouterr().err == ""  # said once, by rank 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, folder: str, port: int) -> None:
    env = {"RANK": rank, "WORLD_SIZE": 2, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    os.environ.update({key: str(value) for key, value in env.items()})
    torch.set_num_threads(1)
    init_distributed()
    out = {}
    try:
        reference = SignalAt()
        _train(reference, Path(folder) / "reference", rank=rank, world=2)
        try:  # only rank 1 is signalled, during step 6
            _train(
                SignalAt(6 if rank == 1 else None, signal.SIGTERM), Path(folder) / "run", rank=rank, world=2
            )
        except TrainingInterrupted as exc:
            out["stopped"] = (exc.step, exc.exit_status)
            out["ranks_saved"] = len(load_state(exc.checkpoint)["ranks"])  # both RNG streams
        resumed = SignalAt()
        _train(resumed, Path(folder) / "run", resume=True, rank=rank, world=2)
        out["same"] = _bitwise_equal(weights(resumed), weights(reference))
        torch.save(out, Path(folder) / f"rank{rank}.pt")
    finally:
        cleanup()


@pytest.mark.ddp
def test_every_rank_stops_after_the_same_step_when_one_is_signalled(tmp_path) -> None:
    mp.spawn(_rank, args=(str(tmp_path), _free_port()), nprocs=2, join=True)
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        assert out == {"stopped": (6, 143), "ranks_saved": 2, "same": True}
