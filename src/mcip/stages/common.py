"""What the stages share: the image stages' defaults and trainable side, the drift guard, the contrastive
loss and its step, the validator and the ArcMargin centres' start. A stage's own Task and builder live in
its module (:mod:`mcip.stages.gpr`, ``mcip``, ``realign``, ``align``).

Tasks join a model and a loss: ``task(batch) -> {"loss": scalar, **logs}``. The loop knows nothing else.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from mcip.engine.validate import Validator
from mcip.errors import ConfigError
from mcip.losses import ArcMarginLoss, EmbeddingDriftLoss, SigLIPLoss, create_loss
from mcip.models import freeze_image_groups, set_trainable_parts
from mcip.models.base import EmbeddingModel
from mcip.models.projector import text_matches_image
from mcip.stages.features import _rank0_first, default_cache_dir, image_embeddings
from mcip.stages.inputs import TrainInputs

if TYPE_CHECKING:
    from mcip.stages.config import TrainConfig

IMAGE_SIDE = ("image_encoder", "image_projector")

# SPEC section 5: the authors' values. GPR-FT/MCIP fine-tune gently; Re-A uses CLIP-style settings.
IMAGE_STAGE_DEFAULTS = {"optim": {"lr": 1e-6, "weight_decay": 1e-2, "betas": [0.9, 0.999], "min_lr": 1e-7}}
CONTRASTIVE_OPTIM = {
    "weight_decay": 0.2,
    "betas": [0.9, 0.98],
    "eps": 1e-6,
    "min_lr": 0.0,
    "head_lr_mult": 1.0,
}


def train_image_side(model: EmbeddingModel, cfg: TrainConfig) -> None:
    """The image stages' trainable parameters: the image encoder and projector, less the encoder's first
    ``cfg.freeze_image_groups`` groups (:func:`mcip.models.freeze_image_groups`)."""
    set_trainable_parts(model, IMAGE_SIDE)
    freeze_image_groups(model, cfg.freeze_image_groups)


def cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def contrastive_loss(cfg: TrainConfig, model: EmbeddingModel) -> nn.Module:
    """The contrastive stages' loss, ``loss.contrastive`` (resolved as ``cfg.loss.name``) with its settings."""
    if cfg.loss.name == "siglip" and not model.has_logit_bias():
        raise ConfigError("loss.contrastive=siglip needs a model with a logit bias (a SigLIP model).")
    return create_loss(cfg.loss.name, **cfg.loss.settings)


def validator(model: EmbeddingModel, val, shards=None, image_cache=None) -> Validator | None:
    """Both sides of the validation that ``val`` allows (see mcip.engine.validate)."""
    if not val:
        return None
    return Validator(model, val, shards=shards, image_cache=image_cache, text=text_matches_image(model))


def fixed_text_side(checker: Validator | None, model: EmbeddingModel, cfg: TrainConfig) -> None:
    """For a stage in which no part of the text side trains (GPR-FT, MCIP): the val captions' embeddings
    are computed once, cached on disk per text tower (float32, so validations see what the tower
    computes), and every validation reuses them instead of running the text tower again."""
    if checker is None or not checker.texts:
        return
    from mcip.embed import cached_text_embeddings

    texts = checker.caption_texts
    checker.text_embeddings = _rank0_first(
        lambda: cached_text_embeddings(
            model, texts, cache_dir(cfg), desc="caching val caption embeddings", dtype="float32"
        )
    )


def frozen_image_stem(checker: Validator | None, model: EmbeddingModel, cfg: TrainConfig) -> None:
    """For an image stage with ``freeze_image_groups``: register the frozen stem (later encodes by any
    model with the same stem reuse its activations, :mod:`mcip.image_stems`) and give the validation the
    val images' stem activations (when there is a validation on val images read by path), so each
    validation runs only the encoder above them. Nothing where the encoder cannot be split or nothing is
    frozen."""
    groups = cfg.freeze_image_groups
    if groups < 1:
        return
    from mcip.image_stems import cached_image_stem, register_image_stem

    validated = checker is not None and checker.shards is None and bool(checker.val)

    def fill():
        if not register_image_stem(model, groups, cache_dir(cfg)) or not validated:
            return None
        return cached_image_stem(model, [r.path for r in checker.val], cache_dir(cfg), groups)

    stems = _rank0_first(fill)
    if validated:
        checker.image_stems = stems


def init_centres(
    arc: ArcMarginLoss, model: EmbeddingModel, cfg: TrainConfig, inputs: TrainInputs, classes
) -> None:
    """``loss.centre_init=class_means``: centres start at the class means of the starting model's
    embeddings (eval transform, cached); xavier (the paper) leaves them as they are."""
    if cfg.loss.centre_init != "class_means":
        return
    emb = np.asarray(image_embeddings(model, inputs.train, cache_dir(cfg)), dtype=np.float32)
    ok = ~np.isnan(emb[:, 0])
    labels = torch.tensor([classes[r.label] for r, good in zip(inputs.train, ok, strict=True) if good])
    arc.init_from_class_means(torch.from_numpy(emb[ok]).to(arc.weight.device), labels.to(arc.weight.device))


class DriftGuard:
    """``loss.distill_weight * mean(1 - cos(f_new(x), f_start(x)))`` (mcip.losses.drift) for the image
    stages. ``start`` is a frozen copy of the starting model, kept out of the task's modules (never
    trained, never switched to train mode, not saved in checkpoints: it is rebuilt from the start spec)."""

    def __init__(self, start: EmbeddingModel, weight: float) -> None:
        self.start, self.weight, self.loss = start.eval().requires_grad_(False), weight, EmbeddingDriftLoss()

    def __call__(self, pixels: Tensor, emb: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.start.encode_image(pixels)
        return self.loss(emb, target)


def drift_guard(model: EmbeddingModel, cfg: TrainConfig) -> DriftGuard | None:
    """A frozen copy of the starting model for ``loss.distill_weight`` > 0 (taken before any step)."""
    if not cfg.loss.distill_weight:
        return None
    return DriftGuard(copy.deepcopy(model), cfg.loss.distill_weight)


def with_drift(out: dict[str, Tensor], guard: DriftGuard | None, pixels: Tensor, emb: Tensor):
    """``out`` with ``guard``'s weighted drift added to its loss (and logged as ``drift``)."""
    if guard is None:
        return out
    drift = guard(pixels, emb)
    out["loss"] = out["loss"] + guard.weight * drift
    out["drift"] = drift.detach()
    return out


def contrastive_step(
    loss: nn.Module, model: EmbeddingModel, image: Tensor, text: Tensor
) -> dict[str, Tensor]:
    """The contrastive stages' ``{"loss", "logit_scale"}`` for (B, D) image and text embeddings."""
    if isinstance(loss, SigLIPLoss):
        value = loss(image, text, model.logit_scale, model.logit_bias)
    else:
        value = loss(image, text, model.logit_scale)
    return {"loss": value, "logit_scale": model.logit_scale.detach().exp().reshape(())}
