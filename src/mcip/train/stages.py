"""The paper's stages as library functions (kept as the import path of earlier releases).

The stages now live in their own modules: what a stage reads in :mod:`mcip.train.inputs`, how each is
built in :mod:`mcip.train.builders` (registered in :mod:`mcip.train.stage_registry` with its defaults,
Task and validation metric), and running stages and pipelines in :mod:`mcip.train.run`.
"""

from __future__ import annotations

from mcip.train.builders import prepare_align, prepare_gpr, prepare_mcip, prepare_realign
from mcip.train.inputs import VAL_MODES, TrainInputs, read_inputs, read_records
from mcip.train.run import StageResult, run, run_stage
from mcip.train.stage_registry import Prepared

__all__ = [
    "VAL_MODES",
    "Prepared",
    "StageResult",
    "TrainInputs",
    "prepare_align",
    "prepare_gpr",
    "prepare_mcip",
    "prepare_realign",
    "read_inputs",
    "read_records",
    "run",
    "run_stage",
]
