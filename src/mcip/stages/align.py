"""Contrastive alignment of ``align_parts`` (the lab's base model; LiT-style with frozen towers).

Batches: ``pixels``, ``tokens``, or ``image_index`` / ``caption_index`` into the cached features of a
frozen encoder (:func:`mcip.stages.features.frozen_image_features` / ``frozen_text_features``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mcip.data import ImageDataset, ResumableLoader, class_index
from mcip.data.pairs import CollatePairs, SampledCaptionDataset
from mcip.embed import cached_text_features
from mcip.engine.distributed import DistInfo
from mcip.losses import InfoNCELoss, SigLIPLoss
from mcip.models import set_trainable_parts
from mcip.models.base import EmbeddingModel
from mcip.stages.common import CONTRASTIVE_OPTIM, cache_dir, contrastive_loss, contrastive_step, validator
from mcip.stages.features import _rank0_first, frozen_image_features, frozen_text_features
from mcip.stages.inputs import TrainInputs, batch_sampler, captioned
from mcip.stages.registry import Prepared, register_stage


class AlignTask(torch.nn.Module):
    """General contrastive training of both towers (which parts train is set by freezing).

    A frozen encoder's pooled features may be given precomputed (LiT-style: only projectors and the
    logit scale train): ``image_features (N_images, F_img)`` indexed by ``batch["image_index"]`` and
    ``text_features (N_captions, F_txt)`` by ``batch["caption_index"]``; the projectors run on them.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        loss: InfoNCELoss | SigLIPLoss,
        image_features: np.ndarray | None = None,
        text_features: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.model, self.loss = model, loss
        self.image_features, self.text_features = image_features, text_features

    def forward(self, batch: dict) -> dict[str, Tensor]:
        if self.image_features is None and self.text_features is None:
            out = self.model(pixels=batch["pixels"], tokens=batch["tokens"])
            return contrastive_step(self.loss, self.model, out["image"], out["text"])
        device = self.model.device
        if self.image_features is None:
            image = self.model.encode_image(batch["pixels"])
        else:
            feats = _rows(self.image_features, batch["image_index"], device)
            image = F.normalize(self.model.project_image(feats), dim=-1)
        if self.text_features is None:
            text = self.model.encode_text(batch["tokens"])
        else:
            feats = _rows(self.text_features, batch["caption_index"], device)
            text = F.normalize(self.model.project_text(feats), dim=-1)
        return contrastive_step(self.loss, self.model, image, text)


def _rows(features: np.ndarray, index: Tensor, device: torch.device) -> Tensor:
    return torch.from_numpy(np.asarray(features[index.cpu().numpy()], dtype=np.float32)).to(device)


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
    return Prepared(task, data, (), _frozen_validator(model, inputs.val, image_feats, text_feats, cfg))


def _frozen_validator(model, val, image_feats, text_feats, cfg):
    """The validator, running only what trains: a frozen encoder's val features are cached like the
    training ones (each validation runs the projectors on them, not the towers)."""
    checker = validator(model, val)
    if checker is None:
        return None
    if image_feats is not None:
        checker.image_features = frozen_image_features(model, val, cache_dir(cfg))
    if text_feats is not None and checker.texts:
        texts = checker.caption_texts
        checker.text_features = _rank0_first(lambda: cached_text_features(model, texts, cache_dir(cfg)))
    return checker
