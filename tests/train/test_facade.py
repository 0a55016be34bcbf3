"""``mcip.train`` keeps its earlier public names, each the object of its new home (engine, stages)."""

from __future__ import annotations

import importlib

import mcip.train

HOMES = {
    "train": "mcip.engine.loop",
    "LoopConfig": "mcip.engine.loop_config",
    "DataSource": "mcip.engine.loop_config",
    "OptimConfig": "mcip.engine.optim",
    "TrainingCheckpoints": "mcip.engine.checkpoint",
    "TrainingInterrupted": "mcip.engine.preempt",
    "init_distributed": "mcip.engine.distributed",
    "TrainResult": "mcip.engine.result",
    "prepare_gpr": "mcip.stages.gpr",
    "prepare_mcip": "mcip.stages.mcip",
    "prepare_realign": "mcip.stages.realign",
    "prepare_align": "mcip.stages.align",
    "read_inputs": "mcip.stages.inputs",
    "run_stage": "mcip.stages.run",
    "Prepared": "mcip.stages.registry",
}


def test_every_exported_name_resolves():
    assert all(getattr(mcip.train, name) is not None for name in mcip.train.__all__)


def test_names_are_the_objects_of_their_new_homes():
    for name, home in HOMES.items():
        assert getattr(mcip.train, name) is getattr(importlib.import_module(home), name), name
