"""DDP on 2 CPU processes (gloo): the same weights as one process on the concatenated batches."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from mcip.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup,
    is_main,
    run_on_main,
)
from mcip.train import LoopConfig, OptimConfig, init_distributed, train
from tests.train.toy import ToyData, accuracy_validator, make_task, weights

WORLD, BATCH = 2, 4
OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3)
LOOP = LoopConfig(epochs=2, grad_accum=2, log_every=2, checkpoint_every=3, val_every=3)


class HoleOnRank1:
    """ToyData whose batch 1 is unreadable (None) on rank 1 only."""

    def __init__(self, data: ToyData) -> None:
        self.data, self.batches_per_epoch = data, data.batches_per_epoch

    def iterate(self, epoch: int, start_batch: int = 0):
        for index, batch in enumerate(self.data.iterate(epoch, start_batch), start=start_batch):
            yield None if (self.data.rank == 1 and index == 1) else batch


def _worker(rank: int, folder: str, port: int) -> None:
    env = {
        "RANK": rank,
        "WORLD_SIZE": WORLD,
        "LOCAL_RANK": rank,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
    }
    os.environ.update({key: str(value) for key, value in env.items()})
    torch.set_num_threads(1)
    info = init_distributed()
    try:
        assert (info.rank, info.world_size, is_main()) == (rank, WORLD, rank == 0)
        data = ToyData(n=64, batch=BATCH, rank=rank, world=WORLD)
        task = make_task()
        result = train(task, data, OPTIM, LOOP, Path(folder) / "run", validate=accuracy_validator(data),
                       val_metric="acc", dist=info, progress=False)  # fmt: skip
        holey = make_task()
        loop = LoopConfig(epochs=1, grad_accum=2, checkpoint_every=None)
        skipped = train(
            holey, HoleOnRank1(data), OPTIM, loop, Path(folder) / "holey", dist=info, progress=False
        )
        out = {"weights": weights(task), "steps": result.steps, "best": result.best_metric,
               "holey": weights(holey), "holey_skipped": skipped.skipped_batches,
               "mean": all_reduce_mean(torch.tensor([float(rank)])), "obj": broadcast_object(f"r{rank}")}  # fmt: skip
        try:
            run_on_main(_fail, info)
        except (ValueError, RuntimeError) as exc:  # rank 0: the original error; rank 1: a report of it
            out["failure"] = f"{type(exc).__name__}: {exc}"
        barrier()
        torch.save(out, Path(folder) / f"rank{rank}.pt")
    finally:
        cleanup()


def _fail() -> None:
    raise ValueError("validation data missing")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.ddp
def test_two_ranks_equal_one_process_with_the_double_batch(tmp_path) -> None:
    mp.spawn(_worker, args=(str(tmp_path), _free_port()), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    data = ToyData(n=64, batch=WORLD * BATCH)
    task = make_task()
    single = train(task, data, OPTIM, LOOP, tmp_path / "single", validate=accuracy_validator(data),
                   val_metric="acc", dist=DistInfo(), progress=False)  # fmt: skip
    for out in ranks:
        torch.testing.assert_close(out["weights"], weights(task))
        assert out["steps"] == single.steps == 8 and out["best"] == pytest.approx(single.best_metric)
        torch.testing.assert_close(out["holey"], ranks[0]["holey"])  # ranks stay in sync around a hole
        assert out["holey_skipped"] == 1
        assert float(out["mean"]) == 0.5 and out["obj"] == "r0"
    assert ranks[0]["failure"] == "ValueError: validation data missing"
    assert ranks[1]["failure"] == "RuntimeError: Rank 0 failed: ValueError: validation data missing"
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_single_process_helpers_are_no_ops(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    value = torch.tensor([3.0])
    assert all_reduce_mean(value) is value and broadcast_object("x") == "x" and is_main()
    barrier()
    cleanup()
