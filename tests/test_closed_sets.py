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

    from mcip.engine import optim
    from mcip.engine.loop import LoopConfig

    assert WEIGHT_PRECISIONS == ("fp32", "bf16", "fp16") == tuple(WEIGHT_DTYPES)
    assert ("auto", *WEIGHT_PRECISIONS) == AMP_PRECISIONS and optim.PRECISIONS == AMP_PRECISIONS
    assert precision_of(torch.bfloat16) == "bf16" and precision_of(torch.float64) == "fp32"
    hint = typing.get_type_hints(LoopConfig)["precision"]
    assert typing.get_args(hint) == AMP_PRECISIONS


def test_hard_caption_weight_default():
    from mcip.experiment.lab import LabSettings
    from mcip.experiment.rows import RunSettings
    from mcip.losses import loss_settings

    assert DEFAULT_HARD_CAPTION_WEIGHT == 0.1  # the authors' value
    assert _default(MCArcMarginLoss, "hard_caption_weight") == DEFAULT_HARD_CAPTION_WEIGHT
    assert _default(MCIPLoss, "hard_caption_weight") == DEFAULT_HARD_CAPTION_WEIGHT
    # the library's config takes the loss's own defaults; mcip fit keeps the authors' values
    assert loss_settings("mcip")["hard_caption_weight"] == DEFAULT_HARD_CAPTION_WEIGHT
    fields = {f.name: f.default for f in dataclasses.fields(RunSettings)}
    assert fields["hard_caption_weight"] == DEFAULT_HARD_CAPTION_WEIGHT
    assert fields["mc_weight"] == _default(MCIPLoss, "mc_weight") == 0.25
    assert _default(MCIPLoss, "arc_weight") == 0.75
    # the lab uses the setting its val sweep chose (examples/lab_sweep.py; README "Keep the text side")
    assert (LabSettings().hard_caption_weight, LabSettings().mc_weight) == (0.0, 0.5)


def test_stage_names():
    from mcip.stages.catalog import image_stages, stage_entry
    from mcip.stages.config import PIPELINES, STAGES
    from mcip.stages.registry import STAGES as STAGE_REGISTRY

    assert set(STAGE_REGISTRY.names()) == set(STAGES)  # one registry entry per name of the Stage literal
    builders = {n for n in STAGES if stage_entry(n).builder is not None}
    assert builders == set(STAGES) - {"wise"}  # wise is a pipeline step, not a stage
    assert {n for n in STAGES if stage_entry(n).defaults} <= builders and set(image_stages()) == {
        "gpr",
        "mcip",
    }
    for name in builders:  # every stage says what it selects on and which Task it trains
        spec = stage_entry(name)
        assert spec.val_metric in ("i2i_map", "t2i_r5") and spec.task is not None and spec.description
    assert all(step in STAGES for steps in PIPELINES.values() for step in steps)


def test_runtimes():
    from mcip.cli import build_parser
    from mcip.export import RUNTIMES

    assert RUNTIMES == ("torch", "onnx")
    parser = build_parser()
    for name in ("encode", "serve"):
        command = parser._subparsers._group_actions[0].choices[name]
        runtime = next(a for a in command._actions if a.dest == "runtime")
        assert tuple(runtime.choices) == RUNTIMES and runtime.default == RUNTIMES[0]
