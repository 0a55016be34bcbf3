"""Parameter groups (the no-decay rule, the head group) and the schedule against its closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mcip.engine.optim import (
    AmpOptimizer,
    OptimConfig,
    build_optimizer,
    cosine_schedule,
    decays,
    lr_factor,
    param_groups,
)
from mcip.errors import ConfigError


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)  # weight decays, bias does not
        self.ln_1 = nn.LayerNorm(4)
        self.bn1 = nn.BatchNorm1d(4)
        self.subnet = nn.Linear(4, 4)  # "bn" inside a word is not a batch norm
        self.positional_embedding = nn.Parameter(torch.zeros(5, 4))
        self.class_embedding = nn.Parameter(torch.zeros(4))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.centres = nn.Parameter(torch.zeros(10, 4))  # ArcMargin class centres: the head


def _names(groups: list[dict], model: nn.Module) -> dict[str, set[str]]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {by_id[id(p)] for p in g["params"]} for g in groups}


def test_groups_follow_the_no_decay_rule_and_put_the_head_apart() -> None:
    model, cfg = Model(), OptimConfig(lr=1e-6, weight_decay=0.01, head_lr_mult=100.0)
    groups = param_groups(model.named_parameters(), [model.centres], cfg)
    names = _names(groups, model)
    assert names["decay"] == {"proj.weight", "subnet.weight"}
    assert names["no_decay"] == {
        "proj.bias", "ln_1.weight", "ln_1.bias", "bn1.weight", "bn1.bias", "subnet.bias",
        "positional_embedding", "class_embedding", "cls_token", "pos_embed", "logit_scale",
    }  # fmt: skip
    assert names["head"] == {"centres"}
    by_name = {g["name"]: g for g in groups}
    assert by_name["decay"]["weight_decay"] == 0.01 and by_name["no_decay"]["weight_decay"] == 0.0
    assert by_name["head"]["lr"] == pytest.approx(1e-4) and by_name["head"]["weight_decay"] == 0.01
    assert by_name["decay"]["lr"] == by_name["no_decay"]["lr"] == 1e-6


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("blocks.0.attn.qkv.weight", (12, 4), True),
        ("blocks.0.norm1.weight", (4,), False),
        ("encoder.layer.0.LayerNorm.weight", (4, 4), False),  # case-insensitive, even if 2-D
        ("transformer.resblocks.0.ln_2.weight", (4, 4), False),
        ("embeddings.position_embedding.weight", (7, 4), False),
        ("token_embedding.weight", (7, 4), True),
        ("conv.bn.weight", (4, 4), False),
        ("subnet.weight", (4, 4), True),
        ("logit_bias", (1, 1), False),
    ],
)
def test_decay_rule(name: str, shape: tuple[int, ...], expected: bool) -> None:
    assert decays(name, nn.Parameter(torch.zeros(shape))) is expected


def test_nothing_trainable_is_an_error() -> None:
    model = nn.Linear(3, 3).requires_grad_(False)
    with pytest.raises(ConfigError, match="Nothing to train"):
        param_groups(model.named_parameters())


def test_duplicate_and_frozen_head_params_are_handled() -> None:
    model = Model()
    model.centres.requires_grad_(False)
    groups = param_groups(model.named_parameters(), [model.centres, model.centres])
    assert "head" not in {g["name"] for g in groups}


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": 0}, {"weight_decay": -1}, {"betas": (0.9, 1.0)}, {"eps": 0}, {"min_lr": 1.0},
     {"warmup_steps": -1}, {"warmup_steps": 1.5}, {"head_lr_mult": 0}],
)  # fmt: skip
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        OptimConfig(**kwargs)


def _closed_form(step: int, total: int, base: float, cfg: OptimConfig) -> float:
    """lr(step) written out: linear warm-up (step+1)/W, then cosine from base to min_lr * base / lr."""
    if step < cfg.warmup_steps:
        return base * (step + 1) / cfg.warmup_steps
    low = cfg.min_lr * base / cfg.lr
    t = min(1.0, (step - cfg.warmup_steps) / (total - cfg.warmup_steps))
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * t))


@pytest.mark.parametrize("warmup", [0, 5])
def test_schedule_matches_the_closed_form_per_group(warmup: int) -> None:
    model, total = Model(), 40
    cfg = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=warmup, head_lr_mult=10.0)
    optimizer = build_optimizer(param_groups(model.named_parameters(), [model.centres], cfg), cfg)
    scheduler = cosine_schedule(optimizer, total, cfg)
    for step in range(total + 3):  # beyond the end it stays at min_lr
        for group in optimizer.param_groups:
            base = cfg.lr * (cfg.head_lr_mult if group["name"] == "head" else 1.0)
            assert group["lr"] == pytest.approx(_closed_form(step, total, base, cfg), rel=1e-9, abs=1e-15)
        optimizer.step()
        scheduler.step()
    head = next(g for g in optimizer.param_groups if g["name"] == "head")
    assert head["lr"] == pytest.approx(cfg.min_lr * cfg.head_lr_mult)
    assert lr_factor(0, total, cfg) == pytest.approx(1.0 if warmup == 0 else 1 / warmup)


def test_schedule_validation() -> None:
    optimizer = build_optimizer(param_groups(nn.Linear(2, 2).named_parameters()))
    with pytest.raises(ConfigError, match="total_steps"):
        cosine_schedule(optimizer, 0, OptimConfig())
    with pytest.raises(ConfigError, match="warmup_steps"):
        cosine_schedule(optimizer, 3, OptimConfig(warmup_steps=4))


def test_adamw_settings_reach_the_optimizer() -> None:
    cfg = OptimConfig(lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
    optimizer = build_optimizer(param_groups(nn.Linear(2, 2).named_parameters(), cfg=cfg), cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-6


def test_amp_optimizer_state_round_trip() -> None:
    model = nn.Linear(3, 2)
    cfg = OptimConfig(lr=1e-2)
    opt = AmpOptimizer(param_groups(model.named_parameters(), cfg=cfg), cfg, 10, precision="fp16")
    for _ in range(3):
        opt.backward(model(torch.randn(4, 3)).square().mean())
        opt.step()
    clone = AmpOptimizer(param_groups(model.named_parameters(), cfg=cfg), cfg, 10, precision="fp16")
    clone.load_state_dict(opt.state_dict())
    assert clone.lrs() == opt.lrs() and clone.scheduler.last_epoch == 3
    assert clone.scaler.get_scale() == opt.scaler.get_scale()
