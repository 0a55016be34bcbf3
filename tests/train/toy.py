"""A toy task and data source for the engine tests: an MLP classifier on synthetic tensors."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class ToyTask(nn.Module):
    """MLP (+ LayerNorm, optional dropout) and a linear classifier; ``task(batch) -> {"loss", "acc"}``.

    ``sleep`` seconds per forward slow it down so a test can kill it mid-epoch.
    """

    def __init__(self, dim: int = 8, hidden: int = 16, classes: int = 4, dropout: float = 0.0, sleep=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, classes)
        self.sleep = sleep

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.sleep:
            time.sleep(self.sleep)
        logits = self.head(self.net(batch["x"]))
        loss = F.cross_entropy(logits.float(), batch["y"])  # mean over the batch
        acc = (logits.argmax(1) == batch["y"]).float().mean()
        return {"loss": loss, "acc": acc}


def make_task(seed: int = 0, **kwargs) -> ToyTask:
    torch.manual_seed(seed)
    return ToyTask(**kwargs)


class ToyData:
    """``n`` items in global batches of ``batch * world`` rows, in a seeded per-epoch permutation.

    Rank ``rank`` of ``world`` gets rows ``rank * batch .. (rank + 1) * batch`` of each global batch, so
    ``world=2, batch=B`` sees exactly the rows of ``world=1, batch=2B``. ``noise`` adds
    ``noise * torch.randn`` from the GLOBAL torch RNG (a random augmentation whose stream a resumed run
    must continue).
    """

    def __init__(self, n=64, batch=8, dim=8, classes=4, seed=0, noise=0.0, rank=0, world=1) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=gen)
        self.y = self.x[:, :classes].argmax(1)  # learnable labels
        self.batch, self.seed, self.noise, self.rank, self.world = batch, seed, noise, rank, world
        self.batches_per_epoch = n // (batch * world)

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        perm = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        for b in range(start_batch, self.batches_per_epoch):
            first = (b * self.world + self.rank) * self.batch
            rows = perm[first : first + self.batch]
            x = self.x[rows]
            if self.noise:
                x = x + self.noise * torch.randn_like(x)
            yield {
                "x": x,
                "y": self.y[rows],
                "meta": {"rows": rows},
                "names": [f"item{int(r)}" for r in rows],
            }


def accuracy_validator(data: ToyData):
    """``validate(task) -> {"acc", "loss"}`` on all of ``data``'s items (no noise)."""

    def validate(task: nn.Module) -> dict[str, float]:
        out = task({"x": data.x, "y": data.y})
        return {"acc": float(out["acc"]), "loss": float(out["loss"])}

    return validate


def weights(task: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in task.state_dict().items()}
