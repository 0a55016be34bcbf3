"""Typed configuration of a training run; YAML is only its serialisation (read and resolved by
:mod:`mcip.stages.resolve`: defaults <- per-stage defaults <- the YAML file <- ``--set`` overrides).

The closed sets: :data:`STAGES` (the stages and pipeline steps, ``mcip.stages.registry.Stage``) and
:data:`PIPELINES`. This module names no stage's code, so reading a config builds nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mcip.engine.loop_config import LoopConfig
from mcip.engine.optim import OptimConfig
from mcip.errors import ConfigError
from mcip.stages.registry import STAGE_NAMES

STAGES: tuple[str, ...] = STAGE_NAMES
PIPELINES: dict[str, tuple[str, ...]] = {
    "2sft": ("gpr", "realign"),
    "mcip+rea": ("mcip", "realign"),
    # wise: WiSE-FT between the starting model and the previous stage's output, alpha chosen on val
    "mcip+wise": ("mcip", "wise"),
    "mcip+wise+rea": ("mcip", "wise", "realign"),
    "2sft+wise": ("gpr", "wise", "realign"),
}
MISSING = "???"
CONTRASTIVE_LOSSES = ("infonce", "siglip")  # what loss.contrastive chooses for realign / align


@dataclass(frozen=True)
class ModelConfig:
    """Which model to start from and how to prepare it."""

    spec: str = MISSING
    drop_projector: bool = False
    grad_checkpointing: bool = False
    freeze_bn_stats: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)  # backend options, e.g. {embed_dim: 384}


@dataclass(frozen=True)
class DataConfig:
    """Training data: a manifest (CSV/JSONL/Parquet), an image folder, or tar shards (``*.tar``)."""

    train: str = MISSING
    root: str | None = None
    captions: str | None = None  # JSONL sidecar {"id", "captions": [...]} (the captions commands write it)
    val: str | None = None  # a separate validation manifest/folder; when set, val_fraction is not used
    val_fraction: float = 0.05
    # unseen_classes: val classes never train (val_fraction holds out whole classes; val images query each
    # other); seen_classes: val holds other images of trained classes (val_fraction holds out a fraction of
    # each class; val images query the training images); auto: seen when data.val shares a class with
    # data.train, else unseen (and unseen for val_fraction)
    val_mode: Literal["auto", "unseen_classes", "seen_classes"] = "auto"
    batch_size: int = 128
    balanced_m: int | None = None  # m images per class per batch; None = plain shuffling
    num_workers: int = 4
    max_captions: int = 20
    seed: int = 0
    encoding: str | None = None  # of CSV/JSONL manifests and the sidecar; None: UTF-8 or the file's BOM

    def __post_init__(self) -> None:
        from mcip.data.textfile import check_encoding

        check_encoding(self.encoding)  # an unknown codec name fails here, not after the model loaded


@dataclass(frozen=True)
class LossConfig:
    """A stage's loss: ``name`` (a loss of :mod:`mcip.losses`, the one the stage trains with) and its
    ``settings`` (that loss's own, e.g. ``mc_weight`` for ``mcip``; margins in radians), each default
    defined once, in the loss's signature (:func:`mcip.losses.loss_settings`), plus the stage's options
    around the loss. In YAML and ``--set`` the settings are plain keys of ``loss:`` (``loss.mc_weight=0.1``),
    checked by :func:`mcip.stages.resolve.resolve_loss` against the losses' settings.
    """

    name: str | None = None  # set when the stage is resolved (None: a pipeline step without a loss)
    settings: dict[str, Any] = field(default_factory=dict)
    # realign/align: the contrastive loss (gpr trains with arcmargin, mcip with mcip)
    contrastive: Literal["infonce", "siglip"] = "infonce"
    # ArcMargin centres: "xavier" (the paper) or "class_means" (each class's mean embedding under the
    # starting model, computed once and cached; converges in fewer steps)
    centre_init: Literal["xavier", "class_means"] = "xavier"
    # gpr/mcip: + distill_weight * mean(1 - cos(f_new(x), f_start(x))) on the image embedding, f_start a
    # frozen copy of the starting model on the same augmented batch (mcip.losses.drift); 0 = off (paper)
    distill_weight: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.distill_weight, int | float) and 0 <= self.distill_weight < float("inf")):
            raise ConfigError(f"loss.distill_weight must be a number >= 0, got {self.distill_weight!r}.")
        if self.contrastive not in CONTRASTIVE_LOSSES:
            raise ConfigError(
                f"loss.contrastive must be one of {', '.join(CONTRASTIVE_LOSSES)}, got {self.contrastive!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        """As in YAML: the settings are plain keys of ``loss:``."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "settings"}
        return {**options, **self.settings}


@dataclass(frozen=True)
class WiseConfig:
    """The pipelines' ``wise`` step (WiSE-FT, SPEC section 8): (1 - alpha) * start + alpha * previous
    stage's output; ``alpha: auto`` takes the ``grid`` value that ``select`` picks on the val data."""

    alpha: float | str = "auto"
    grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    select: Literal["combined", "i2i", "t2i", "guarded"] = "combined"
    parts: tuple[str, ...] | None = None  # None: every part the previous stage changed
    names: str | None = None  # 'label<TAB>name' file: val zero-shot top-1 on the curve
    batch_size: int = 64
    tolerance: float = 0.5  # select=guarded: points of val T2I R@5 / zero-shot top-1 an alpha may give up
    # select=guarded: the sides held (zeroshot alone when Re-A follows the merge)
    guard: tuple[str, ...] = ("t2i", "zeroshot")

    def __post_init__(self) -> None:
        from mcip.models.merge import check_parts
        from mcip.wise.select import (
            WISE_SELECT_KEYS,
            check_grid,
            check_guard,
            check_tolerance,
            check_val,
            parse_alpha,
        )

        object.__setattr__(self, "alpha", parse_alpha(self.alpha))
        object.__setattr__(self, "grid", check_grid(self.grid))
        object.__setattr__(self, "parts", check_parts(self.parts))
        object.__setattr__(self, "tolerance", check_tolerance(self.tolerance))
        object.__setattr__(self, "guard", check_guard(self.guard))
        if self.select not in WISE_SELECT_KEYS:
            check_val([], self.select)  # the message lists the valid values


@dataclass(frozen=True)
class TrainConfig:
    """One stage, or a pipeline of stages sharing model/data settings (``stages`` holds per-stage overrides)."""

    out: str = MISSING
    stage: str | None = None
    pipeline: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    wise: WiseConfig = field(default_factory=WiseConfig)
    # gpr/mcip: the image encoder's first N parameter groups (stem, then blocks or stages) stay frozen; the
    # backward pass stops above them (mcip.models.freeze_image_groups). 0 = the whole encoder trains (paper)
    freeze_image_groups: int = 0
    unlock_text_blocks: int = 1  # realign: trainable last text blocks (+ final norm, projector, scale)
    realign_init: Literal["lstsq", "random"] = "lstsq"  # new text projector when drop_projector is set
    # realign: the frozen lower text blocks run once over every caption (states cached on disk, see
    # mcip.stages.text_cache) and each step runs only the unlocked ones; false = the whole text tower every
    # step (cheaper for runs shorter than "captions per image" epochs that are never repeated)
    realign_text_cache: bool = True
    align_parts: tuple[str, ...] = ("image_projector", "text_projector", "logit_scale")
    cache_dir: str | None = None  # feature caches; default $MCIP_CACHE_DIR or ~/.cache/mcip
    stages: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain({**dataclasses.asdict(self), "loss": self.loss.to_dict()})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_resolved(config: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
