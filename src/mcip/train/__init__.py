"""Training, under its earlier import path: the names it exported, re-exported from where they live now.

- :mod:`mcip.engine`: the paper-agnostic machinery: the loop (``train``, ``LoopConfig``, ``DataSource``),
  AdamW and its schedule, checkpoints, processes, stop signals, validation on held-out data;
- :mod:`mcip.stages`: the paper's stages, one module each (``gpr``, ``mcip``, ``realign``, ``align``)
  with the typed config (``mcip.stages.config``), its resolution (``mcip.stages.resolve``) and the runner
  of stages and pipelines (``mcip.stages.run``);
- :mod:`mcip.wise`: WiSE-FT with alpha chosen on validation data (merge, curve, selections, plot).

New code imports from those packages; the submodules of ``mcip.train`` (``mcip.train.loop``, ...) are gone.
"""

from mcip.engine.checkpoint import TrainingCheckpoints, load_state, save_state
from mcip.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    is_main,
)
from mcip.engine.loop import train
from mcip.engine.loop_config import DataSource, LoopConfig
from mcip.engine.optim import OptimConfig, build_optimizer, cosine_schedule, param_groups
from mcip.engine.preempt import TrainingInterrupted
from mcip.engine.result import TrainResult
from mcip.stages.align import prepare_align
from mcip.stages.gpr import prepare_gpr
from mcip.stages.inputs import VAL_MODES, TrainInputs, read_inputs, read_records
from mcip.stages.mcip import prepare_mcip
from mcip.stages.realign import prepare_realign
from mcip.stages.registry import Prepared
from mcip.stages.run import StageResult, run, run_stage

__all__ = [
    "VAL_MODES",
    "DataSource",
    "DistInfo",
    "LoopConfig",
    "OptimConfig",
    "Prepared",
    "StageResult",
    "TrainInputs",
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
    "prepare_align",
    "prepare_gpr",
    "prepare_mcip",
    "prepare_realign",
    "read_inputs",
    "read_records",
    "run",
    "run_stage",
    "save_state",
    "train",
]
