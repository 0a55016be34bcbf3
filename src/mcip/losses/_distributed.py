"""Gathering embeddings across ranks for the contrastive losses.

All ranks must pass the same local batch size ``B``; the gathered matrix is ``(world_size * B, D)``
with rank r's rows at ``r * B .. r * B + B - 1``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from mcip.errors import InputError


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_equal_batch(x: Tensor, world_size: int) -> None:
    """Fail on every rank unless all ranks pass the same batch size (one tiny all_gather)."""
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.empty_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    found = [int(s) for s in sizes]
    if len(set(found)) != 1:
        raise InputError(
            f"Distributed contrastive losses need the same batch size on every rank, got {found} "
            "(rank order). Use drop_last=True in the DataLoader / DistributedSampler so that "
            "every rank gets full batches."
        )


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums each rank's gradient for our slot over all ranks."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        rank, world_size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_rows(x: Tensor, with_grad: bool = True) -> Tensor:
    """Concatenate every rank's ``(B, D)`` rows into ``(world_size * B, D)``.

    With ``with_grad`` the gradient w.r.t. this rank's rows is the SUM over ranks of the gradients of
    each rank's loss, so DDP's gradient averaging yields the gradient of the mean per-rank loss.
    Without it the other ranks' rows are constants and only the local slot (the input tensor itself)
    carries gradient. Returns ``x`` unchanged when not distributed.
    """
    rank, world_size = world()
    if world_size == 1:
        return x
    check_equal_batch(x, world_size)
    if with_grad:
        return _GatherWithGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0)
