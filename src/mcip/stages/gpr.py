"""GPR-FT: ArcMargin on class labels, training the image tower and projector (SPEC section 2).

Batches: ``pixels (B,3,S,S)``, ``labels (B,)``; with ``loss.distill_weight`` > 0 the drift guard's frozen
starting model runs on the same pixels (:class:`~mcip.stages.common.DriftGuard`).
"""

from __future__ import annotations

from torch import Tensor, nn

from mcip.engine.distributed import DistInfo
from mcip.losses import ArcMarginLoss, create_loss
from mcip.models.base import EmbeddingModel
from mcip.stages.common import (
    IMAGE_STAGE_DEFAULTS,
    DriftGuard,
    drift_guard,
    fixed_text_side,
    frozen_image_stem,
    init_centres,
    train_image_side,
    validator,
    with_drift,
)
from mcip.stages.inputs import TrainInputs, image_loader
from mcip.stages.registry import Prepared, register_stage


class GPRTask(nn.Module):
    """GPR-FT: ArcMargin on the (normalised) image embedding; the text side is untouched."""

    def __init__(self, model: EmbeddingModel, loss: ArcMarginLoss, drift: DriftGuard | None = None) -> None:
        super().__init__()
        self.model, self.loss, self.drift = model, loss, drift

    def forward(self, batch: dict) -> dict[str, Tensor]:
        emb = self.model.encode_image(batch["pixels"])
        out = {"loss": self.loss(emb, batch["labels"])}
        return with_drift(out, self.drift, batch["pixels"], emb)


@register_stage(
    "gpr",
    description="GPR-FT: ArcMargin on the image tower and projector (class labels)",
    defaults=IMAGE_STAGE_DEFAULTS,
    task=GPRTask,
    val_metric="i2i_map",
    trains="image",
    loss="arcmargin",
)
def prepare_gpr(model, cfg, inputs: TrainInputs, dist: DistInfo) -> Prepared:
    train_image_side(model, cfg)
    data, classes = image_loader(model, cfg, inputs, dist)
    validate = validator(model, inputs.val, shards=inputs.shards)
    fixed_text_side(validate, model, cfg)
    frozen_image_stem(validate, model, cfg)
    loss = create_loss(
        cfg.loss.name, num_classes=len(classes), embed_dim=model.embed_dim, **cfg.loss.settings
    )
    init_centres(loss, model, cfg, inputs, classes)
    task = GPRTask(model, loss.to(dist.device), drift_guard(model, cfg))
    return Prepared(task, data, tuple(loss.parameters()), validate)
