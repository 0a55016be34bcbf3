"""Each closed set is defined once; every place that names its members agrees with that definition."""

from __future__ import annotations

import dataclasses
import inspect
import typing

from mcip.losses.mcarcmargin import DEFAULT_HARD_CAPTION_WEIGHT, MCArcMarginLoss
from mcip.losses.mcip import MCIPLoss
from mcip.models.precision import AMP_PRECISIONS, WEIGHT_DTYPES, WEIGHT_PRECISIONS, precision_of


def _default(cls, name):
    return inspect.signature(cls).parameters[name].default


def test_precisions():
    import torch

    from mcip.train import optim
    from mcip.train.loop import LoopConfig

    assert WEIGHT_PRECISIONS == ("fp32", "bf16", "fp16") == tuple(WEIGHT_DTYPES)
    assert ("auto", *WEIGHT_PRECISIONS) == AMP_PRECISIONS and optim.PRECISIONS == AMP_PRECISIONS
    assert precision_of(torch.bfloat16) == "bf16" and precision_of(torch.float64) == "fp32"
    hint = typing.get_type_hints(LoopConfig)["precision"]
    assert typing.get_args(hint) == AMP_PRECISIONS


def test_hard_caption_weight_default():
    from mcip.experiment.lab import LabSettings
    from mcip.experiment.rows import RunSettings
    from mcip.train.config import LossConfig

    assert DEFAULT_HARD_CAPTION_WEIGHT == 0.1  # the authors' value
    assert _default(MCArcMarginLoss, "hard_caption_weight") == DEFAULT_HARD_CAPTION_WEIGHT
    assert _default(MCIPLoss, "hard_caption_weight") == DEFAULT_HARD_CAPTION_WEIGHT
    for cls in (LossConfig, RunSettings):  # the library and mcip fit keep the authors' value
        field = {f.name: f for f in dataclasses.fields(cls)}["hard_caption_weight"]
        assert field.default == DEFAULT_HARD_CAPTION_WEIGHT
    # the lab uses the setting its val sweep chose (examples/lab_sweep.py; README "Keep the text side")
    assert (LabSettings().hard_caption_weight, LabSettings().mc_weight) == (0.0, 0.5)


def test_stage_names():
    from mcip.train.config import IMAGE_STAGES, PIPELINES, STAGE_DEFAULTS, STAGE_REGISTRY, STAGES

    assert set(STAGE_REGISTRY.names()) == set(STAGES)  # one registry entry per name of the Stage literal
    builders = {n for n in STAGES if STAGE_REGISTRY.get(n).builder is not None}
    assert builders == set(STAGES) - {"wise"}  # wise is a pipeline step, not a stage
    assert set(STAGE_DEFAULTS) <= builders and set(IMAGE_STAGES) == {"gpr", "mcip"}
    for name in builders:  # every stage says what it selects on and which Task it trains
        spec = STAGE_REGISTRY.get(name)
        assert spec.val_metric in ("i2i_map", "t2i_r5") and spec.task is not None and spec.description
    assert all(step in STAGES for steps in PIPELINES.values() for step in steps)
