"""How the training loop runs (:class:`LoopConfig`) and what it reads (:class:`DataSource`), apart from the
loop itself (:mod:`mcip.engine.loop`), so that a config can name them without building anything."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mcip.errors import ConfigError
from mcip.models.precision import AMP_PRECISIONS as PRECISIONS
from mcip.models.precision import AmpPrecision

SELECT_CHOICES = ("auto", "i2i", "t2i", "combined")
ValidationHook = Callable[[float, int, dict[str, float]], bool]  # (epoch, step, val results) -> stop now


def _check_int(name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        hint = " or None" if optional else ""
        raise ConfigError(f"LoopConfig.{name} must be an int >= 1{hint}, got {value!r}.")


@dataclass(frozen=True)
class LoopConfig:
    """How to train. ``max_steps``, when set, replaces ``epochs`` (as many epochs as it needs);
    ``checkpoint_every`` / ``val_every`` count optimizer steps (None: only at the end / each epoch end);
    ``clip_grad_norm=None`` disables clipping; ``early_stopping_patience`` counts validations without
    a new best ``val_metric``; ``seed`` is offset by the rank. ``select`` is read by the training stages
    (mcip.engine.validate): which validation result picks the best checkpoint, ``auto`` (the stage's own:
    val I2I mAP for gpr/mcip, val T2I R@5 for realign/align, the authors' choice), ``i2i``, ``t2i`` or
    ``combined`` (both sides, each relative to the starting model; the starting model itself is then a
    candidate, so a stage never returns a model worse than its start on val)."""

    epochs: int = 3
    max_steps: int | None = None
    grad_accum: int = 1
    precision: AmpPrecision = "auto"
    clip_grad_norm: float | None = 1.0
    compile: bool = False
    log_every: int = 10
    checkpoint_every: int | None = 500
    keep_last: int = 2
    val_every: int | None = None
    seed: int = 0
    early_stopping_patience: int | None = None
    max_skipped_fraction: float = 0.5
    select: Literal["auto", "i2i", "t2i", "combined"] = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "grad_accum", "log_every", "keep_last"):
            _check_int(name, getattr(self, name))
        for name in ("max_steps", "checkpoint_every", "val_every", "early_stopping_patience"):
            _check_int(name, getattr(self, name), optional=True)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"LoopConfig.precision must be one of {PRECISIONS}, got {self.precision!r}.")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ConfigError(
                f"clip_grad_norm must be > 0 (None disables clipping), got {self.clip_grad_norm}."
            )
        if not 0 < self.max_skipped_fraction <= 1:
            raise ConfigError(f"max_skipped_fraction must be in (0, 1], got {self.max_skipped_fraction}.")
        if self.select not in SELECT_CHOICES:
            raise ConfigError(f"loop.select must be one of {SELECT_CHOICES}, got {self.select!r}.")
        if not isinstance(self.seed, int):
            raise ConfigError(f"LoopConfig.seed must be an int, got {self.seed!r}.")


class DataSource(Protocol):
    """Batches for the loop. ``iterate(epoch, start_batch)`` yields batches ``start_batch ..
    batches_per_epoch - 1`` of ``epoch`` in a deterministic per-epoch order (so a resumed run sees the
    same batches). A batch is a dict of tensors / nested dicts / other values, optionally with
    ``"skipped": [(index, error), ...]``; ``None``, or a batch without rows, means every item of the
    batch was unreadable: the loop skips it without a step (on every rank)."""

    batches_per_epoch: int

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[dict | None]: ...
