"""Re-A: re-align the last text blocks to the (fixed) image embeddings, contrastive (SPEC section 4).

Batches: ``image_index (B,)`` into the cached image embeddings (the image tower is frozen), ``tokens``
(dict of (B, L)) or ``caption_index (B,)`` into the cached lower-text-block states
(:mod:`mcip.stages.text_cache`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mcip.data import ResumableLoader
from mcip.data.pairs import CollatePairs, SampledCaptionDataset
from mcip.engine.distributed import DistInfo
from mcip.losses import InfoNCELoss, SigLIPLoss
from mcip.models import unlock_last_text_blocks
from mcip.models.base import EmbeddingModel
from mcip.models.projector import match_text_width
from mcip.stages.common import CONTRASTIVE_OPTIM, cache_dir, contrastive_loss, contrastive_step, validator
from mcip.stages.features import _rank0_first, image_embeddings
from mcip.stages.inputs import TrainInputs, batch_sampler, captioned
from mcip.stages.registry import Prepared, register_stage
from mcip.stages.text_cache import TextHiddenCache, cache_val_text_hidden, no_tokens, realign_text_cache


class RealignTask(torch.nn.Module):
    """Re-A: InfoNCE between cached (frozen) image embeddings and the text tower being trained.

    With ``text_hidden`` (mcip.stages.text_cache) the frozen lower text blocks are not run: the batch's
    cached states (``caption_index``) go through the unlocked blocks only; else the whole tower runs
    on ``tokens``.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        image_features: np.ndarray,
        loss: InfoNCELoss | SigLIPLoss,
        text_hidden: TextHiddenCache | None = None,
    ):
        super().__init__()
        self.model, self.loss = model, loss
        self.image_features = image_features  # (N_images, D) memory-mapped, L2-normalised
        self.text_hidden = text_hidden

    def forward(self, batch: dict) -> dict[str, Tensor]:
        if self.text_hidden is None:
            text = self.model.encode_text(batch["tokens"])
        else:
            text = self.text_hidden.encode(self.model, batch["caption_index"])
        idx = batch["image_index"].cpu().numpy()
        image = torch.from_numpy(np.asarray(self.image_features[idx], dtype=np.float32)).to(text.device)
        return contrastive_step(self.loss, self.model, image, text)


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
        _rank0_first(lambda: cache_val_text_hidden(checker, cfg.unlock_text_blocks, cache_dir(cfg)))
    return Prepared(task, data, (), checker)
