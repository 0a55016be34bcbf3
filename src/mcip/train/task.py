"""Tasks join a model and a loss: ``task(batch) -> {"loss": scalar, **logs}``. The loop knows nothing else.

Batches (dicts of tensors) per task:
- GPRTask      ``pixels (B,3,S,S)``, ``labels (B,)``
- MCIPTask     ``pixels``, ``labels``, ``index (B,)`` = record index into the cached caption embeddings
- RealignTask  ``image_index (B,)`` into the cached image embeddings, ``tokens`` (dict of (B, L))
- AlignTask    ``pixels``, ``tokens`` (or ``image_index`` / ``caption_index`` into cached frozen-encoder
               features)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcip.losses import ArcMarginLoss, InfoNCELoss, MCIPLoss, SigLIPLoss
from mcip.models.base import EmbeddingModel


class GPRTask(nn.Module):
    """GPR-FT: ArcMargin on the (normalised) image embedding; the text side is untouched."""

    def __init__(self, model: EmbeddingModel, loss: ArcMarginLoss) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch: dict) -> dict[str, Tensor]:
        emb = self.model.encode_image(batch["pixels"])
        loss = self.loss(emb, batch["labels"])
        return {"loss": loss}


class MCIPTask(nn.Module):
    """MCIP: 0.75 ArcMargin + 0.25 MCArcMargin against the batch's cached caption embeddings.

    ``caption_rows(index) -> (caption_emb (N, D), caption_owner (N,))`` returns the cached, frozen
    text-tower embeddings of the captions of the batch's records (see mcip.data.cache.RaggedFeatures).
    """

    def __init__(self, model: EmbeddingModel, loss: MCIPLoss, caption_rows) -> None:
        super().__init__()
        self.model, self.loss = model, loss
        self.caption_rows = caption_rows

    def forward(self, batch: dict) -> dict[str, Tensor]:
        emb = self.model.encode_image(batch["pixels"])
        captions, owner = self.caption_rows(batch["index"].cpu().tolist())
        captions = captions.to(device=emb.device, dtype=torch.float32)
        parts = self.loss.forward_parts(emb, batch["labels"], captions, owner.to(emb.device))
        return {
            "loss": parts["loss"],
            "arc": parts["arc"].detach(),
            "mc": parts["mc"].detach(),
            "captions_per_image": torch.tensor(len(owner) / max(len(emb), 1)),
        }


class RealignTask(nn.Module):
    """Re-A: InfoNCE between cached (frozen) image embeddings and the text tower being trained."""

    def __init__(self, model: EmbeddingModel, image_features: np.ndarray, loss: InfoNCELoss | SigLIPLoss):
        super().__init__()
        self.model, self.loss = model, loss
        self.image_features = image_features  # (N_images, D) memory-mapped, L2-normalised

    def forward(self, batch: dict) -> dict[str, Tensor]:
        text = self.model.encode_text(batch["tokens"])
        idx = batch["image_index"].cpu().numpy()
        image = torch.from_numpy(np.asarray(self.image_features[idx], dtype=np.float32)).to(text.device)
        return _contrastive(self.loss, self.model, image, text)


class AlignTask(nn.Module):
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
            return _contrastive(self.loss, self.model, out["image"], out["text"])
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
        return _contrastive(self.loss, self.model, image, text)


def _rows(features: np.ndarray, index: Tensor, device: torch.device) -> Tensor:
    return torch.from_numpy(np.asarray(features[index.cpu().numpy()], dtype=np.float32)).to(device)


def _contrastive(loss: nn.Module, model: EmbeddingModel, image: Tensor, text: Tensor) -> dict[str, Tensor]:
    if isinstance(loss, SigLIPLoss):
        value = loss(image, text, model.logit_scale, model.logit_bias)
    else:
        value = loss(image, text, model.logit_scale)
    return {"loss": value, "logit_scale": model.logit_scale.detach().exp().reshape(())}
