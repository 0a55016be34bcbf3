"""torch.distributed for torchrun launches: one process per GPU (or per CPU slot on gloo).

Launch with ``torchrun --nproc_per_node=N ...`` (multi-node: add ``--nnodes``, ``--node_rank`` and
``--master_addr``); torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. Without them everything here is a single-process no-op, so the same code runs both ways.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mcip.errors import ConfigError

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global ``rank`` of ``world_size``, ``local_rank`` on its node, ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def default_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is available, else the CPU."""
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def _is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes in the environment (nccl on CUDA, else gloo).

    Returns ``DistInfo(0, 1, 0, device)`` without touching torch.distributed when the process was not
    launched by torchrun. Calling it again once the group exists only returns the description.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(0, 1, 0, default_device(0))
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise ConfigError(
            f"Distributed launch is missing the environment variables {missing}; start the script "
            "with torchrun (e.g. torchrun --nproc_per_node=2 ...), which sets all of them."
        )
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = default_device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not _is_initialized():
        dist.init_process_group(
            backend or ("nccl" if device.type == "cuda" else "gloo"),
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    return DistInfo(rank, world_size, local_rank, device)


def current() -> DistInfo:
    """Describe the running process group (or the single process) without initialising anything."""
    if not _is_initialized():
        return DistInfo(0, 1, 0, default_device(0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, default_device(local_rank))


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return not _is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if _is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (a new tensor); ``tensor`` itself in a single process."""
    if not _is_initialized() or dist.get_world_size() == 1:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (a new tensor); ``tensor`` itself in a single process."""
    if not _is_initialized() or dist.get_world_size() == 1:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def any_rank(*flags: bool, device: torch.device = _CPU) -> list[bool]:
    """For each flag, whether it is True on at least one rank (one tiny all-reduce)."""
    if not _is_initialized() or dist.get_world_size() == 1:
        return list(flags)
    counts = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return [c > 0 for c in counts.tolist()]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects only)."""
    if not _is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def run_on_main(fn: Callable[[], Any], info: DistInfo) -> Any:
    """``fn()`` on rank 0 only, its result broadcast to every rank. A failure on rank 0 is raised on
    every rank (the original exception on rank 0), so no rank waits for a result that never comes."""
    if info.world_size == 1:
        return fn()
    result, error = None, None
    if info.is_main:
        try:
            result = ("ok", fn())
        except Exception as exc:
            result, error = ("error", f"{type(exc).__name__}: {exc}"), exc
    kind, value = broadcast_object(result)
    if error is not None:
        raise error
    if kind == "error":
        raise RuntimeError(f"Rank 0 failed: {value}")
    return value


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order; ``[obj]`` in a single process."""
    if not _is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    """Leave the process group (no-op when there is none)."""
    if _is_initialized():
        dist.destroy_process_group()


def move_to(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor (inside dicts, lists and tuples too) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {key: move_to(value, device) for key, value in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
        return type(obj)(*(move_to(value, device) for value in obj))
    if isinstance(obj, list | tuple):
        return type(obj)(move_to(value, device) for value in obj)
    return obj


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel(module)`` when ``info.world_size > 1``, else ``module`` itself.

    ``find_unused_parameters=False``: frozen parameters (requires_grad=False) are fine; every trainable
    one must receive a gradient in each step.
    """
    if info.world_size == 1:
        return module
    ids = [info.device] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False)
