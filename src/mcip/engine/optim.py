"""AdamW with parameter groups and a per-step cosine learning-rate schedule (SPEC section 5).

Weight-decay rule (:func:`decays`): a parameter is exempt from weight decay when it has fewer than two
dimensions (biases, norm scales, scalars such as the logit scale), or when one component of its dotted
name (lower-cased)

* contains ``"bias"`` or ``"norm"`` (``LayerNorm``, ``norm1``, ``layer_norm``),
* starts with ``"ln_"`` / ``"bn_"`` or is ``"ln"`` / ``"bn"`` optionally followed by digits
  (``ln_1``, ``ln_final``, ``bn2``),
* is one of ``logit_scale``, ``logit_bias``, ``positional_embedding``, ``position_embedding(s)``,
  ``class_embedding``, ``cls_token``, ``pos_embed``.

Components are matched instead of raw substrings so that e.g. ``subnet.weight`` is not taken for a
batch norm. Every other trainable parameter (weight matrices, convolution kernels, token embeddings)
gets ``weight_decay``. "Head" parameters (e.g. ArcMargin class centres) form their own group at
``lr * head_lr_mult`` WITH weight decay, whatever their shape, as in the authors' setup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_
from torch.optim.lr_scheduler import LambdaLR

from mcip.errors import ConfigError
from mcip.models.precision import AMP_PRECISIONS, WEIGHT_DTYPES

NO_DECAY_NAMES = frozenset(
    {
        "logit_scale",
        "logit_bias",
        "positional_embedding",
        "position_embedding",
        "position_embeddings",
        "class_embedding",
        "cls_token",
        "pos_embed",
    }
)
_NORM_PREFIX = re.compile(r"^(ln_|ln\d*$|bn\d*$|bn_)")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and schedule settings; defaults are the authors' GPR-FT / MCIP values.

    Attributes:
        lr: base learning rate of the model's parameters.
        weight_decay: decoupled AdamW weight decay for the decaying groups.
        betas, eps: AdamW moment coefficients and epsilon.
        min_lr: learning rate reached at the end of the cosine (scaled per group, see cosine_schedule).
        warmup_steps: optimizer steps of linear warm-up before the cosine starts (0 = none).
        head_lr_mult: learning-rate multiplier of the head group (ArcMargin centres: 1e-4 / 1e-6).
    """

    lr: float = 1e-6
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    min_lr: float = 1e-7
    warmup_steps: int = 0
    head_lr_mult: float = 100.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not self.lr > 0:
            raise ConfigError(f"OptimConfig.lr must be > 0, got {self.lr}; the paper uses 1e-6.")
        if self.weight_decay < 0:
            raise ConfigError(f"OptimConfig.weight_decay must be >= 0, got {self.weight_decay}.")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"OptimConfig.betas must be two numbers in [0, 1), got {self.betas}.")
        if not self.eps > 0:
            raise ConfigError(f"OptimConfig.eps must be > 0, got {self.eps}.")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(
                f"OptimConfig.min_lr must be in [0, lr={self.lr}], got {self.min_lr}; "
                "set min_lr to at most lr (the paper decays 1e-6 to 1e-7)."
            )
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(f"OptimConfig.warmup_steps must be an int >= 0, got {self.warmup_steps!r}.")
        if not self.head_lr_mult > 0:
            raise ConfigError(f"OptimConfig.head_lr_mult must be > 0, got {self.head_lr_mult}.")


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether ``param`` gets weight decay under the module docstring's rule."""
    if param.ndim < 2:
        return False
    for part in name.lower().split("."):
        if "bias" in part or "norm" in part or part in NO_DECAY_NAMES or _NORM_PREFIX.match(part):
            return False
    return True


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    head_params: Iterable[nn.Parameter] = (),
    cfg: OptimConfig | None = None,
) -> list[dict]:
    """Split trainable parameters into the groups ``decay``, ``no_decay`` and ``head``.

    Args:
        named_params: e.g. ``task.named_parameters()``; parameters with ``requires_grad=False`` are left
            out, and so are the head parameters if they appear here too.
        head_params: parameters trained at ``lr * head_lr_mult`` with weight decay (class centres).
        cfg: learning rate and weight decay; defaults to ``OptimConfig()``.

    Returns:
        Non-empty groups as dicts with ``name``, ``params``, ``lr`` and ``weight_decay``.
    """
    cfg = cfg or OptimConfig()
    head = [p for p in _unique(head_params) if p.requires_grad]
    head_ids = {id(p) for p in head}
    seen: set[int] = set()
    decay, no_decay = [], []
    for name, param in named_params:
        if not param.requires_grad or id(param) in head_ids or id(param) in seen:
            continue
        seen.add(id(param))
        (decay if decays(name, param) else no_decay).append(param)
    groups = [
        {"name": "decay", "params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"name": "no_decay", "params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
        {"name": "head", "params": head, "lr": cfg.lr * cfg.head_lr_mult, "weight_decay": cfg.weight_decay},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError(
            "Nothing to train: every parameter has requires_grad=False. Unfreeze the parts to train "
            "(mcip.set_trainable_parts) or pass the loss's class centres as head_params."
        )
    return groups


def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    out, seen = [], set()
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def build_optimizer(groups: list[dict], cfg: OptimConfig | None = None) -> torch.optim.AdamW:
    """AdamW over ``groups`` (each keeps its own ``lr`` / ``weight_decay``); fused/foreach left to torch."""
    cfg = cfg or OptimConfig()
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of each group's base lr at optimizer step ``step`` (0-based).

    Warm-up (``step < W``, ``W = warmup_steps``): ``(step + 1) / W``, a linear ramp from ``1/W`` up to 1
    (open_clip's convention: the first step already learns). Then cosine over the remaining steps:
    ``r + (1 - r) * (1 + cos(pi * t)) / 2`` with ``r = min_lr / lr`` and
    ``t = (step - W) / (total_steps - W)`` clipped to [0, 1]. A group with base lr ``b`` therefore decays
    from ``b`` to ``min_lr * b / lr`` (the head group to ``min_lr * head_lr_mult``).
    """
    warm = cfg.warmup_steps
    if step < warm:
        return (step + 1) / warm
    ratio = cfg.min_lr / cfg.lr
    t = min(1.0, max(0.0, (step - warm) / max(1, total_steps - warm)))
    return ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, cfg: OptimConfig) -> LambdaLR:
    """Per-step warm-up + cosine (:func:`lr_factor`); call ``scheduler.step()`` after each optimizer step."""
    if total_steps < 1:
        raise ConfigError(f"The schedule needs total_steps >= 1, got {total_steps}; train for longer.")
    if cfg.warmup_steps > total_steps:
        raise ConfigError(
            f"warmup_steps={cfg.warmup_steps} exceeds the {total_steps} training steps; lower warmup_steps."
        )

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, cfg)

    return LambdaLR(optimizer, factor)


PRECISIONS = AMP_PRECISIONS  # re-exported by mcip.engine.loop


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain fp32). ``auto``: bf16 on a CUDA device that supports it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and bf16_ok else None
    if precision == "bf16" and not bf16_ok:
        raise ConfigError("This GPU does not support bf16; use precision='fp16' (with loss scaling).")
    return None if precision == "fp32" else WEIGHT_DTYPES[precision]


class AmpOptimizer:
    """AdamW + cosine schedule + autocast and (fp16) GradScaler + clipping: the loop's optimizer step.

    Per micro-batch: forward under :meth:`autocast`, :meth:`backward` of ``loss / grad_accum``. Then
    :meth:`step`: unscale the gradients FIRST, clip their global norm, AdamW step (skipped by the scaler
    on inf/NaN in fp16), schedule step. The authors' code clipped the still-scaled fp16 gradients, so
    clipping never acted (SPEC section 5).
    """

    def __init__(
        self,
        groups: list[dict],
        cfg: OptimConfig,
        total_steps: int,
        clip_grad_norm: float | None = 1.0,
        precision: str = "fp32",
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = build_optimizer(groups, cfg)
        self.scheduler = cosine_schedule(self.optimizer, total_steps, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.clip = clip_grad_norm

    def autocast(self) -> AbstractContextManager:
        """The forward pass's autocast context (a no-op in fp32)."""
        return nullcontext() if self.dtype is None else torch.autocast(self.device.type, self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def lrs(self) -> dict[str, float]:
        """The current learning rate of each group, by group name."""
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}

    def step(self, grad_mult: float = 1.0) -> dict[str, torch.Tensor]:
        """Apply the accumulated gradients (times ``grad_mult``); returns ``{"grad_norm"}`` when clipping."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if grad_mult != 1.0 and grads:
            torch._foreach_mul_(grads, grad_mult)
        self.scaler.unscale_(self.optimizer)  # BEFORE clipping
        logs = {}
        if self.clip is not None:
            logs["grad_norm"] = clip_grad_norm_(self.params, self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.zero_grad()
        self.scheduler.step()
        return logs

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, dict]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, dict]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved without fp16
            self.scaler.load_state_dict(state["scaler"])
