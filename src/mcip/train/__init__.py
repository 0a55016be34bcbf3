"""Training: the engine (optimizer, loop, checkpoints, distributed) and the paper's stages."""

from mcip.train.checkpoint import TrainingCheckpoints, load_state, save_state
from mcip.train.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    is_main,
)
from mcip.train.loop import DataSource, LoopConfig, TrainResult, train
from mcip.train.optim import OptimConfig, build_optimizer, cosine_schedule, param_groups
from mcip.train.preempt import TrainingInterrupted

__all__ = [
    "DataSource",
    "DistInfo",
    "LoopConfig",
    "OptimConfig",
    "TrainResult",
    "TrainingCheckpoints",
    "TrainingInterrupted",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "build_optimizer",
    "cleanup",
    "cosine_schedule",
    "init_distributed",
    "is_main",
    "load_state",
    "param_groups",
    "save_state",
    "train",
]
