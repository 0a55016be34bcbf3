"""Training configuration: defaults, stage defaults, YAML, overrides, shipped configs."""

from __future__ import annotations

import pytest

from mcip.errors import ConfigError
from mcip.stages.resolve import load_config, parse_overrides, plan, shipped_configs

REQUIRED = ["out=runs/x", "data.train=train.csv", "data.captions=caps.jsonl"]


def test_every_shipped_config_resolves():
    shipped = shipped_configs()
    assert {
        "2sft-vit-l-14-336",
        "mcip+rea-vit-l-14-336",
        "mcip+rea-siglip-so400m-14-384",
        "lab-align",
        "lab-2sft",
        "lab-mcip+rea",
        "fit-2sft",
        "fit-mcip+rea",
    } <= set(shipped)
    for name in shipped:
        raw = load_config(
            name, [*REQUIRED, "model.spec=composed:lab"] if name.startswith(("lab-", "fit-")) else REQUIRED
        )
        stages = plan(raw)
        assert stages and all(s.out == "runs/x" for s in stages)


def test_paper_values_reach_each_stage():
    gpr, realign = plan(load_config("2sft-vit-l-14-336", REQUIRED))
    assert (gpr.stage, realign.stage) == ("gpr", "realign")
    assert gpr.optim.lr == 1e-6 and gpr.optim.head_lr_mult == 100.0 and gpr.optim.weight_decay == 1e-2
    assert (
        realign.optim.lr == 1e-5 and realign.optim.weight_decay == 0.2 and realign.optim.betas == (0.9, 0.98)
    )
    assert realign.optim.eps == 1e-6 and realign.unlock_text_blocks == 1
    assert gpr.loss.settings["margin"] == 0.1 and gpr.loss.settings["scale"] == 30.0
    assert gpr.model.kwargs == {"force_patch_dropout": 0.33} and gpr.model.grad_checkpointing
    assert realign.loop.epochs == 5 and gpr.loop.epochs == 3


def test_overrides_are_typed_and_win():
    assert parse_overrides(["optim.lr=1e-5", "loop.max_steps=7", "data.root=", "x.y=[1, 2]"]) == {
        "optim": {"lr": 1e-5},
        "loop": {"max_steps": 7},
        "data": {"root": None},
        "x": {"y": [1, 2]},
    }
    (cfg,) = plan(load_config(None, ["stage=gpr", *REQUIRED, "model.spec=composed:lab", "optim.lr=3e-4"]))
    assert cfg.optim.lr == 3e-4 and cfg.optim.min_lr == 1e-7  # stage default kept where not overridden


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stage=gpr", "out=o", "model.spec=m"], "data.train"),
        (["stage=gpr", "out=o", "data.train=t", "optim.learning_rate=1"], "Valid keys"),
        (["stage=fly", "out=o", "data.train=t", "model.spec=m"], "Stages: gpr"),
        (["out=o"], "exactly one of"),
        (["pipeline=3sft", "out=o"], "Pipelines: 2sft"),
        (["stage=gpr", "out=o", "data.train=t", "model.spec=m", "optim.lr=-1"], "optim"),
        (["bad-override"], "key.sub=value"),
    ],
)
def test_bad_configs_say_what_to_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        plan(load_config(None, overrides))


def test_unknown_config_name_lists_shipped():
    with pytest.raises(ConfigError, match="lab-align"):
        load_config("no-such-config")


def test_the_command_line_wins_over_a_stage_section():
    """``--set optim.lr`` reaches every stage, even one whose section in the file sets it;
    ``stages.NAME.KEY`` targets one stage; the file's other section keys stay."""
    gpr, realign = plan(load_config("2sft-vit-l-14-336", [*REQUIRED, "optim.lr=3e-6", "loop.epochs=1"]))
    assert gpr.optim.lr == realign.optim.lr == 3e-6
    assert gpr.loop.epochs == realign.loop.epochs == 1  # the file's realign section says 5
    assert (
        realign.loop.val_every == 200
        and realign.optim.weight_decay == 0.2
        and realign.data.batch_size == 4096
    )
    gpr, realign = plan(load_config("2sft-vit-l-14-336", [*REQUIRED, "stages.realign.optim.lr=2e-5"]))
    assert (gpr.optim.lr, realign.optim.lr) == (1e-6, 2e-5)
    gpr, realign = plan(
        load_config("2sft-vit-l-14-336", [*REQUIRED, "optim.lr=3e-6", "stages.realign.optim.lr=2e-5"])
    )
    assert (gpr.optim.lr, realign.optim.lr) == (3e-6, 2e-5)


# ---------------------------------------------------------------- precedence: file < code's values < --set
# fit-mcip+rea.yaml (written by hand here): loss.mc_weight 0.25 at the top level, stages.mcip.optim.lr 1e-4,
# stages.realign.optim.lr 1e-4, stages.realign.data.batch_size 256.
FIT_REQUIRED = [*REQUIRED, "model.spec=composed:lab"]


def _stages(values=None, overrides=()):
    mcip, realign = plan(load_config("fit-mcip+rea", [*FIT_REQUIRED, *overrides], values))
    return mcip, realign


def test_precedence_file_level():
    mcip, realign = _stages()
    assert (mcip.loss.settings["mc_weight"], mcip.optim.lr, realign.optim.lr, realign.data.batch_size) == (
        0.25,
        1e-4,
        1e-4,
        256,
    )


def test_precedence_code_values_over_file():
    values = {"loss.mc_weight": 0.5, "optim.lr": 3e-4, "stages.realign.data.batch_size": 40}
    mcip, realign = _stages(values)
    assert mcip.loss.settings["mc_weight"] == 0.5
    assert mcip.optim.lr == 3e-4 and realign.optim.lr == 3e-4  # a plain key replaces the file's stage keys
    assert realign.data.batch_size == 40


@pytest.mark.parametrize(
    "override, read, expected",
    [
        ("loss.mc_weight=0.1", lambda m, r: m.loss.settings["mc_weight"], 0.1),
        ("loss.hard_caption_weight=0.0", lambda m, r: m.loss.settings["hard_caption_weight"], 0.0),
        ("optim.lr=2e-6", lambda m, r: (m.optim.lr, r.optim.lr), (2e-6, 2e-6)),
        ("stages.mcip.optim.lr=7e-6", lambda m, r: (m.optim.lr, r.optim.lr), (7e-6, 3e-4)),
        ("stages.realign.optim.lr=2e-5", lambda m, r: (m.optim.lr, r.optim.lr), (3e-4, 2e-5)),
        ("data.batch_size=16", lambda m, r: (m.data.batch_size, r.data.batch_size), (16, 16)),
        ("data.num_workers=0", lambda m, r: m.data.num_workers, 0),
    ],
)
def test_precedence_user_set_wins_over_code_values(override, read, expected):
    """What mcip fit / the lab set in code (``values``) never replaces the user's ``--set``, including a
    per-stage value the code set (``stages.realign.data.batch_size``) against the user's plain key."""
    values = {
        "loss.mc_weight": 0.5,
        "loss.hard_caption_weight": 0.1,
        "optim.lr": 3e-4,
        "data.batch_size": 64,
        "data.num_workers": 4,
        "stages.realign.data.batch_size": 40,
    }
    mcip, realign = _stages(values, [override])
    assert read(mcip, realign) == expected


def test_loss_settings_are_the_stage_losss_own_with_its_defaults():
    from mcip.losses import loss_settings

    raw = load_config(
        None, ["pipeline=mcip+rea", "out=o", "model.spec=m", "data.train=t", "loss.mc_weight=0.1"]
    )
    mcip, realign = plan(raw)
    assert mcip.loss.name == "mcip" and realign.loss.name == "infonce"
    assert mcip.loss.settings == {**loss_settings("mcip"), "mc_weight": 0.1}
    assert mcip.loss.settings["arc_weight"] == 0.75  # not 1 - mc_weight: --set changes one key, as before
    assert realign.loss.settings == loss_settings("infonce")  # MCIP's keys stay with MCIP
    assert mcip.to_dict()["loss"]["mc_weight"] == 0.1  # written flat, as it is read
    again = plan({**mcip.to_dict(), "out": "o2"})[0]  # a resolved config reads back the same
    assert again.loss == mcip.loss


def test_unknown_loss_key_fails_with_the_valid_ones():
    raw = load_config(None, ["stage=gpr", "out=o", "model.spec=m", "data.train=t", "loss.marjin=0.2"])
    with pytest.raises(ConfigError, match=r"marjin.*arcmargin takes scale, margin, sub_centers"):
        plan(raw)
    with pytest.raises(ConfigError, match="trains with 'arcmargin'"):
        plan({**raw, "loss": {"name": "mcip"}})
    with pytest.raises(ConfigError, match=r"loss\.contrastive must be one of infonce, siglip"):
        plan({**raw, "loss": {"contrastive": "clip"}})
