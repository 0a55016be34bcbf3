"""Tasks join a model and a loss: ``task(batch) -> {"loss": scalar, **logs}``. The loop knows nothing else.

Batches (dicts of tensors) per task:
- GPRTask      ``pixels (B,3,S,S)``, ``labels (B,)`` (+ the drift guard's frozen starting model, optional)
- MCIPTask     ``pixels``, ``labels``, ``index (B,)`` = record index into the cached caption embeddings
- RealignTask  ``image_index (B,)`` into the cached image embeddings, ``tokens`` (dict of (B, L)) or
               ``caption_index (B,)`` into the cached lower-text-block states
- AlignTask    ``pixels``, ``tokens`` (or ``image_index`` / ``caption_index`` into cached frozen-encoder
               features)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcip.losses import ArcMarginLoss, EmbeddingDriftLoss, InfoNCELoss, MCIPLoss, SigLIPLoss
from mcip.models.base import EmbeddingModel
from mcip.train.text_cache import TextHiddenCache


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


def _with_drift(out: dict[str, Tensor], guard: DriftGuard | None, pixels: Tensor, emb: Tensor):
    if guard is None:
        return out
    drift = guard(pixels, emb)
    out["loss"] = out["loss"] + guard.weight * drift
    out["drift"] = drift.detach()
    return out


class GPRTask(nn.Module):
    """GPR-FT: ArcMargin on the (normalised) image embedding; the text side is untouched."""

    def __init__(self, model: EmbeddingModel, loss: ArcMarginLoss, drift: DriftGuard | None = None) -> None:
        super().__init__()
        self.model, self.loss, self.drift = model, loss, drift

    def forward(self, batch: dict) -> dict[str, Tensor]:
        emb = self.model.encode_image(batch["pixels"])
        out = {"loss": self.loss(emb, batch["labels"])}
        return _with_drift(out, self.drift, batch["pixels"], emb)


class MCIPTask(nn.Module):
    """MCIP: 0.75 ArcMargin + 0.25 MCArcMargin against the batch's cached caption embeddings.

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
        return _with_drift(out, self.drift, batch["pixels"], emb)


class RealignTask(nn.Module):
    """Re-A: InfoNCE between cached (frozen) image embeddings and the text tower being trained.

    With ``text_hidden`` (mcip.train.text_cache) the frozen lower text blocks are not run: the batch's
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
