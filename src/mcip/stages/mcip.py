"""MCIP: ArcMargin on class labels plus multi-caption ArcMargin on (pseudo-)captions, training the image
tower and projector (SPEC section 3).

Batches: ``pixels``, ``labels``, ``index (B,)`` = record index into the cached caption embeddings (the
text tower is frozen, so the captions are encoded once, :func:`mcip.stages.features.caption_embeddings`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mcip.engine.distributed import DistInfo
from mcip.errors import ConfigError
from mcip.losses import MCIPLoss, create_loss
from mcip.models.base import EmbeddingModel
from mcip.stages.common import (
    IMAGE_STAGE_DEFAULTS,
    DriftGuard,
    cache_dir,
    drift_guard,
    fixed_text_side,
    frozen_image_stem,
    init_centres,
    train_image_side,
    validator,
    with_drift,
)
from mcip.stages.features import caption_embeddings
from mcip.stages.inputs import TrainInputs, captioned, image_loader
from mcip.stages.registry import Prepared, register_stage


class MCIPTask(nn.Module):
    """MCIP: ``arc_weight`` ArcMargin + ``mc_weight`` MCArcMargin against the batch's cached caption
    embeddings (:class:`mcip.losses.MCIPLoss`).

    ``caption_rows(index) -> (caption_emb (N, D), caption_owner (N,))`` returns the cached, frozen
    text-tower embeddings of the captions of the batch's records (see mcip.data.cache.RaggedFeatures).
    """

    def __init__(
        self, model: EmbeddingModel, loss: MCIPLoss, caption_rows, drift: DriftGuard | None = None
    ) -> None:
        super().__init__()
        self.model, self.loss, self.drift = model, loss, drift
        self.caption_rows = caption_rows

    def forward(self, batch: dict) -> dict[str, Tensor]:
        emb = self.model.encode_image(batch["pixels"])
        captions, owner = self.caption_rows(batch["index"].cpu().tolist())
        captions = captions.to(device=emb.device, dtype=torch.float32)
        parts = self.loss.forward_parts(emb, batch["labels"], captions, owner.to(emb.device))
        out = {
            "loss": parts["loss"],
            "arc": parts["arc"].detach(),
            "mc": parts["mc"].detach(),
            "captions_per_image": torch.tensor(len(owner) / max(len(emb), 1)),
        }
        return with_drift(out, self.drift, batch["pixels"], emb)


@register_stage(
    "mcip",
    description="MCIP: ArcMargin + multi-caption ArcMargin on (pseudo-)captions, image tower and projector",
    defaults=IMAGE_STAGE_DEFAULTS,
    task=MCIPTask,
    val_metric="i2i_map",
    trains="image",
    loss="mcip",
)
def prepare_mcip(model, cfg, inputs: TrainInputs, dist: DistInfo) -> Prepared:
    if model.modifications.get("drop_image_projector"):
        raise ConfigError("The mcip stage trains the joint embedding; remove model.drop_projector.")
    captioned(inputs.train, "mcip")
    train_image_side(model, cfg)
    captions = caption_embeddings(model, inputs.train, cache_dir(cfg))
    data, classes = image_loader(model, cfg, inputs, dist, stream=False)  # batches carry record indices
    loss = create_loss(
        cfg.loss.name, num_classes=len(classes), embed_dim=model.embed_dim, **cfg.loss.settings
    )
    loss = loss.to(dist.device)
    init_centres(loss.arc, model, cfg, inputs, classes)
    task = MCIPTask(model, loss, captions.rows_for, drift_guard(model, cfg))
    checker = validator(model, inputs.val)
    fixed_text_side(checker, model, cfg)
    frozen_image_stem(checker, model, cfg)
    return Prepared(task, data, tuple(loss.arc.parameters()), checker)
