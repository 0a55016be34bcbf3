"""The paper's stages (and the base model's alignment), one builder each, registered with their defaults,
Task and validation metric (:mod:`mcip.train.stage_registry`). A builder gets the model, the resolved
config, the stage's inputs (:mod:`mcip.train.inputs`) and the process's rank info, and returns the Task,
its data and its validation (:class:`~mcip.train.stage_registry.Prepared`); ``mcip.train.run`` trains it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mcip.data import ImageDataset, ResumableLoader, class_index
from mcip.data.pairs import CollatePairs, SampledCaptionDataset
from mcip.errors import ConfigError
from mcip.losses import ArcMarginLoss, InfoNCELoss, MCIPLoss, SigLIPLoss
from mcip.models import set_trainable_parts, unlock_last_text_blocks
from mcip.models.base import EmbeddingModel
from mcip.models.projector import match_text_width, text_matches_image
from mcip.train.distributed import DistInfo
from mcip.train.features import (
    _rank0_first,
    caption_embeddings,
    default_cache_dir,
    frozen_image_features,
    frozen_text_features,
    image_embeddings,
)
from mcip.train.inputs import TrainInputs, batch_sampler, captioned, image_loader
from mcip.train.stage_registry import Prepared, register_stage, register_step
from mcip.train.task import AlignTask, DriftGuard, GPRTask, MCIPTask, RealignTask
from mcip.train.text_cache import no_tokens, realign_text_cache
from mcip.train.validate import Validator

if TYPE_CHECKING:
    from mcip.train.config import TrainConfig

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


# ------------------------------------------------------------------ shared pieces
def cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def contrastive_loss(cfg: TrainConfig, model: EmbeddingModel):
    if cfg.loss.contrastive == "siglip":
        if not model.has_logit_bias():
            raise ConfigError("loss.contrastive=siglip needs a model with a logit bias (a SigLIP model).")
        return SigLIPLoss()
    return InfoNCELoss()


def validator(model: EmbeddingModel, val, shards=None, image_cache=None) -> Validator | None:
    """Both sides of the validation that ``val`` allows (see mcip.train.validate)."""
    if not val:
        return None
    return Validator(model, val, shards=shards, image_cache=image_cache, text=text_matches_image(model))


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


def drift_guard(model: EmbeddingModel, cfg: TrainConfig) -> DriftGuard | None:
    """A frozen copy of the starting model for ``loss.distill_weight`` > 0 (taken before any step)."""
    if not cfg.loss.distill_weight:
        return None
    return DriftGuard(copy.deepcopy(model), cfg.loss.distill_weight)


# ------------------------------------------------------------------ stages
@register_stage(
    "gpr",
    description="GPR-FT: ArcMargin on the image tower and projector (class labels)",
    defaults=IMAGE_STAGE_DEFAULTS,
    task=GPRTask,
    val_metric="i2i_map",
    trains="image",
)
def prepare_gpr(model, cfg, inputs: TrainInputs, dist: DistInfo) -> Prepared:
    set_trainable_parts(model, IMAGE_SIDE)
    data, classes = image_loader(model, cfg, inputs, dist)
    validate = validator(model, inputs.val, shards=inputs.shards)
    loss = ArcMarginLoss(len(classes), model.embed_dim, cfg.loss.scale, cfg.loss.margin, cfg.loss.sub_centers)
    init_centres(loss, model, cfg, inputs, classes)
    task = GPRTask(model, loss.to(dist.device), drift_guard(model, cfg))
    return Prepared(task, data, tuple(loss.parameters()), validate)


@register_stage(
    "mcip",
    description="MCIP: ArcMargin + multi-caption ArcMargin on (pseudo-)captions, image tower and projector",
    defaults=IMAGE_STAGE_DEFAULTS,
    task=MCIPTask,
    val_metric="i2i_map",
    trains="image",
)
def prepare_mcip(model, cfg, inputs: TrainInputs, dist: DistInfo) -> Prepared:
    if model.modifications.get("drop_image_projector"):
        raise ConfigError("The mcip stage trains the joint embedding; remove model.drop_projector.")
    captioned(inputs.train, "mcip")
    set_trainable_parts(model, IMAGE_SIDE)
    captions = caption_embeddings(model, inputs.train, cache_dir(cfg))
    data, classes = image_loader(model, cfg, inputs, dist, stream=False)  # batches carry record indices
    c = cfg.loss
    loss = MCIPLoss(
        len(classes),
        model.embed_dim,
        c.arc_weight,
        c.mc_weight,
        c.scale,
        c.margin,
        c.sub_centers,
        c.hard_caption_weight,
    ).to(dist.device)
    init_centres(loss.arc, model, cfg, inputs, classes)
    task = MCIPTask(model, loss, captions.rows_for, drift_guard(model, cfg))
    return Prepared(task, data, tuple(loss.arc.parameters()), validator(model, inputs.val))


@register_stage(
    "realign",
    description="Re-A: re-align the last text blocks to the (fixed) image embeddings, contrastive",
    defaults={
        "optim": {"lr": 1e-5, **CONTRASTIVE_OPTIM},
        "data": {"batch_size": 1024, "num_workers": 0},
        "loop": {"clip_grad_norm": None},
    },
    task=RealignTask,
    val_metric="t2i_r5",
    trains="text",
)
def prepare_realign(model, cfg, inputs: TrainInputs, dist: DistInfo) -> Prepared:
    train = captioned(inputs.train, "realign")
    features = image_embeddings(model, train, cache_dir(cfg))
    readable = ~np.isnan(np.asarray(features[:, 0], dtype=np.float32))
    train = [r for r, ok in zip(train, readable, strict=True) if ok]
    features = features[np.flatnonzero(readable)] if not readable.all() else features
    match_text_width(model, train, features, cfg.realign_init)
    unlock_last_text_blocks(model, cfg.unlock_text_blocks)
    dataset = SampledCaptionDataset(train)
    sampler = batch_sampler(cfg, len(dataset), None, dist)
    hidden = realign_text_cache(model, cfg, train, cache_dir(cfg))  # None: the full tower every step
    collate = CollatePairs(model.tokenize if hidden is None else no_tokens)
    data = ResumableLoader(dataset, sampler, collate, num_workers=0)
    task = RealignTask(model, features, contrastive_loss(cfg, model).to(dist.device), hidden)
    val = inputs.val
    val_features = image_embeddings(model, val, cache_dir(cfg)) if val else None
    checker = validator(model, val, image_cache=val_features)
    if checker is not None and hidden is not None:  # validations run only the unlocked blocks too
        _rank0_first(lambda: checker.cache_text_hidden(cfg.unlock_text_blocks, cache_dir(cfg)))
    return Prepared(task, data, (), checker)


@register_stage(
    "align",
    description="contrastive alignment of align_parts (the lab's base model; LiT-style with frozen towers)",
    defaults={"optim": {"lr": 1e-4, **CONTRASTIVE_OPTIM}},
    task=AlignTask,
    val_metric="t2i_r5",
)
def prepare_align(model, cfg, inputs: TrainInputs, dist: DistInfo) -> Prepared:
    """Contrastive alignment of ``align_parts``. A frozen encoder runs once: its pooled features are cached
    (images with the eval transform, so no augmentation) and only what follows it trains per step."""
    train = captioned(inputs.train, "align")
    set_trainable_parts(model, cfg.align_parts)
    image_feats = text_feats = None
    if "image_encoder" not in cfg.align_parts:
        image_feats = frozen_image_features(model, train, cache_dir(cfg))
        readable = ~np.isnan(image_feats[:, 0])
        if not readable.all():
            train = [r for r, ok in zip(train, readable, strict=True) if ok]
            image_feats = np.asarray(image_feats[np.flatnonzero(readable)])
    if "text_encoder" not in cfg.align_parts:
        text_feats = frozen_text_features(model, train, cache_dir(cfg))
    images = (
        None if image_feats is not None else ImageDataset(train, model.train_transform, class_index(train))
    )
    dataset = SampledCaptionDataset(train, images)
    sampler = batch_sampler(cfg, len(dataset), None, dist)
    workers = cfg.data.num_workers if images is not None else 0
    data = ResumableLoader(dataset, sampler, CollatePairs(model.tokenize), num_workers=workers)
    loss = contrastive_loss(cfg, model).to(dist.device)
    task = AlignTask(model, loss, image_feats, text_feats)
    return Prepared(task, data, (), validator(model, inputs.val))


register_step(
    "wise",
    description="WiSE-FT: the pipeline's start merged with the previous stage's output, alpha chosen on val",
)
