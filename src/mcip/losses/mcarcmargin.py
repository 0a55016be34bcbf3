"""MCArcMargin: ArcMargin with the captions of the batch as class centres (Schall et al. 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcip.losses._checks import (
    check_embeddings,
    check_index,
    check_margin,
    check_non_negative,
    check_positive,
    check_same_width,
)
from mcip.losses._precision import autocast_off, compute_dtype
from mcip.losses.arcmargin import DEFAULT_MARGIN, DEFAULT_SCALE, arc_margin

DEFAULT_HARD_CAPTION_WEIGHT = 0.1
"""h, the weight of MCArcMargin's hardest-caption term: the authors' value (0 disables the term)."""


class MCArcMarginLoss(nn.Module):
    """Multi-caption ArcMargin: each image is classified among all captions of the batch.

    With x_i the normalised image embeddings (B, D) and t_k the normalised caption embeddings (N, D)
    (both normalised here), ``cos_ik = <x_i, t_k>``, and caption k belongs to image ``caption_owner[k]``:

    * ``z_ik = s * phi(cos_ik)`` if caption k is one of image i's captions (the ArcMargin target
      cosine :func:`~mcip.losses.arcmargin.arc_margin`, applied to EVERY own caption), else ``s * cos_ik``;
    * soft target ``q_ik = 1/n_i`` over i's ``n_i`` own captions, 0 elsewhere;
    * ``loss_i = -sum_k q_ik log p_ik + h * max_k[-(1 - q_ik) log p_ik]`` with ``p_i = softmax(z_i)``;
      the max runs over ALL N captions (own captions enter with weight 1 - 1/n_i, others with 1);
    * the loss is the mean of ``loss_i`` over the images with ``n_i > 0``.

    Images with ``n_i = 0`` add no term. If no image has a caption (N = 0) the result is a zero that
    stays connected to the autograd graph, so ``backward()`` and DDP work and produce zero gradients.
    In a distributed run each rank uses its own images and captions (nothing is gathered).

    The loss has no parameters. Caption embeddings come from the frozen text tower and can be cached.

    Args:
        scale: s, the logit multiplier (> 0).
        margin: m in RADIANS, in [0, pi/2).
        hard_caption_weight: h >= 0, weight of the max term; 0 disables it.
    """

    def __init__(
        self,
        scale: float = DEFAULT_SCALE,
        margin: float = DEFAULT_MARGIN,
        hard_caption_weight: float = DEFAULT_HARD_CAPTION_WEIGHT,
    ):
        super().__init__()
        check_positive(scale, "scale")
        check_margin(margin)
        check_non_negative(hard_caption_weight, "hard_caption_weight")
        self.scale, self.margin = float(scale), float(margin)
        self.hard_caption_weight = float(hard_caption_weight)

    def logits(self, image_emb: Tensor, caption_emb: Tensor, caption_owner: Tensor) -> Tensor:
        """(B, N) scaled logits ``z``, the margin applied where ``caption_owner[k] == i``.

        Args:
            image_emb: (B, D) image embeddings.
            caption_emb: (N, D) caption embeddings, N >= 0.
            caption_owner: (N,) integer index of the image each caption belongs to, in 0..B-1.
        """
        return self._logits_and_ownership(image_emb, caption_emb, caption_owner)[0]

    def forward(self, image_emb: Tensor, caption_emb: Tensor, caption_owner: Tensor) -> Tensor:
        """Scalar loss; image_emb (B, D), caption_emb (N, D), caption_owner (N,) in 0..B-1."""
        z, own = self._logits_and_ownership(image_emb, caption_emb, caption_owner)
        if z.shape[1] == 0:
            return z.sum()  # 0 with N = 0, still attached to image_emb's graph
        counts = own.sum(dim=1)
        q = own.to(z.dtype) / counts.clamp(min=1).unsqueeze(1).to(z.dtype)
        log_p = F.log_softmax(z, dim=1)
        per_image = -(q * log_p).sum(dim=1)
        if self.hard_caption_weight > 0:
            per_image = per_image + self.hard_caption_weight * (-(1 - q) * log_p).amax(dim=1)
        has_caption = counts > 0
        per_image = torch.where(has_caption, per_image, torch.zeros_like(per_image))
        return per_image.sum() / has_caption.sum().clamp(min=1)

    def _logits_and_ownership(
        self, image_emb: Tensor, caption_emb: Tensor, caption_owner: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(B, N) logits z and the (B, N) bool ownership mask."""
        self._check(image_emb, caption_emb, caption_owner)
        dtype = compute_dtype(image_emb, caption_emb)
        own = _ownership(caption_owner, image_emb.shape[0])
        with autocast_off(image_emb):
            x = F.normalize(image_emb.to(dtype), dim=1)
            t = F.normalize(caption_emb.to(dtype), dim=1)
            cos = x @ t.T
            return self.scale * torch.where(own, arc_margin(cos, self.margin), cos), own

    def _check(self, image_emb: Tensor, caption_emb: Tensor, caption_owner: Tensor) -> None:
        check_embeddings(image_emb, "image_emb")
        check_embeddings(caption_emb, "caption_emb", allow_empty=True)
        check_same_width(image_emb, caption_emb, "image_emb", "caption_emb")
        batch = image_emb.shape[0]
        check_index(caption_owner, "caption_owner", caption_emb.shape[0], batch, f"the {batch} images")

    def extra_repr(self) -> str:
        return f"scale={self.scale}, margin={self.margin}, hard_caption_weight={self.hard_caption_weight}"


def _ownership(caption_owner: Tensor, batch: int) -> Tensor:
    """(B, N) bool mask, True where caption k belongs to image i."""
    images = torch.arange(batch, device=caption_owner.device)
    return caption_owner.long().unsqueeze(0) == images.unsqueeze(1)
