"""ArcMargin (ArcFace, Deng et al. 2019) with optional sub-centres (Deng et al. 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcip.losses._checks import (
    check_count,
    check_embeddings,
    check_index,
    check_margin,
    check_positive,
)
from mcip.losses._precision import autocast_off, compute_dtype

DEFAULT_SCALE = 30.0
"""s, the logit multiplier of ArcMargin and MCArcMargin: the authors' value."""
DEFAULT_MARGIN = 0.1
"""m in radians, the angular margin of ArcMargin and MCArcMargin: the authors' value."""
DEFAULT_SUB_CENTERS = 1
"""k, ArcMargin centres per class (1: plain ArcFace, the paper)."""


def arc_margin(cos: Tensor, margin: float) -> Tensor:
    """Margin-penalised target cosine ``phi``, elementwise; ``margin`` in radians.

    ``phi = cos(theta + m)`` where ``cos > cos(pi - m)`` (theta + m stays below pi), else the linear
    continuation ``cos - m * sin(pi - m)`` that keeps ``phi`` decreasing in theta. ``cos(theta + m)`` is
    computed as ``cos*cos(m) - sin*sin(m)`` with ``sin = sqrt(max(1 - cos^2, eps))``, eps = the dtype's
    machine epsilon: the clamp only bites at |cos| = 1 (a value of 1 - cos^2 below eps cannot be
    represented otherwise) and keeps the gradient finite there.
    """
    eps = torch.finfo(cos.dtype).eps
    sin = torch.sqrt(torch.clamp(1.0 - cos * cos, min=eps))
    shifted = cos * math.cos(margin) - sin * math.sin(margin)
    return torch.where(cos > math.cos(math.pi - margin), shifted, cos - margin * math.sin(math.pi - margin))


class ArcMarginLoss(nn.Module):
    """Cross-entropy over scaled cosines to learnable class centres, with an additive angular margin.

    ``cos_j = <x/|x|, W_j/|W_j|>`` (both sides are normalised here, so unnormalised embeddings are fine);
    ``logits = s * (phi(cos_y) on the target class, cos_j elsewhere)`` with ``phi`` from
    :func:`arc_margin`; ``loss = mean_i CE(logits_i, y_i)``.

    With ``sub_centers = k > 1`` the class has k centres and its cosine is the max over them.
    ``weight`` is (C * k, D), class-major: rows ``c*k .. c*k + k - 1`` belong to class c.

    The centres are this module's only parameters: give ``loss.parameters()`` their own optimiser
    parameter group (the paper uses 100 x the base learning rate).

    Args:
        num_classes: C, the number of classes; labels are 0..C-1.
        embed_dim: D, the embedding width.
        scale: s, the logit multiplier (> 0).
        margin: m in RADIANS, in [0, pi/2).
        sub_centers: k, centres per class (>= 1).
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        scale: float = DEFAULT_SCALE,
        margin: float = DEFAULT_MARGIN,
        sub_centers: int = DEFAULT_SUB_CENTERS,
    ):
        super().__init__()
        check_count(num_classes, "num_classes")
        check_count(embed_dim, "embed_dim")
        check_positive(scale, "scale")
        check_margin(margin)
        check_count(sub_centers, "sub_centers")
        self.num_classes, self.embed_dim, self.sub_centers = num_classes, embed_dim, sub_centers
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes * sub_centers, embed_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, emb: Tensor) -> Tensor:
        """(B, C) cosine between each normalised embedding and its nearest centre of each class.

        Computed in at least float32; call it outside autocast (or via :meth:`logits`) for full precision.
        """
        dtype = compute_dtype(emb, self.weight)
        x = F.normalize(emb.to(dtype), dim=1)
        w = F.normalize(self.weight.to(dtype), dim=1)
        cos = x @ w.T
        if self.sub_centers > 1:
            cos = cos.view(-1, self.num_classes, self.sub_centers).amax(dim=2)
        return cos

    def logits(self, emb: Tensor, labels: Tensor) -> Tensor:
        """(B, C) scaled logits with the margin applied to each row's target class.

        Args:
            emb: (B, D) embeddings (normalised here).
            labels: (B,) integer class indices in 0..C-1.
        """
        self._check(emb, labels)
        with autocast_off(emb):
            cos = self.cosine(emb)
            target = labels.long().unsqueeze(1)
            phi = arc_margin(cos.gather(1, target), self.margin)
            return self.scale * cos.scatter(1, target, phi)

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy over the batch; emb (B, D), labels (B,). Returns a scalar (>= float32)."""
        return F.cross_entropy(self.logits(emb, labels), labels.long())

    @torch.no_grad()
    def init_from_class_means(self, emb: Tensor, labels: Tensor) -> int:
        """Set every centre of class c to the L2-normalised mean of the (normalised) embeddings labelled c
        (weight imprinting); classes without an embedding keep their initial centres. Sub-centres of a
        class all start at its mean. Returns the number of classes set.

        Starting the centres where the classes already are makes the first steps pull embeddings of a
        class together instead of towards random directions; the paper uses Xavier (the default).

        Args:
            emb: (N, D) embeddings; labels: (N,) in 0..C-1.
        """
        self._check(emb, labels)
        emb = F.normalize(emb.float(), dim=1)
        labels = labels.long().to(emb.device)
        sums = torch.zeros(self.num_classes, self.embed_dim, device=emb.device).index_add_(0, labels, emb)
        present = torch.bincount(labels, minlength=self.num_classes) > 0
        means = F.normalize(sums, dim=1)
        rows = means.repeat_interleave(self.sub_centers, dim=0).to(self.weight)
        keep = present.repeat_interleave(self.sub_centers).to(self.weight.device)
        norm = self.weight.data.norm(dim=1).mean()  # keep the initial scale (it sets the step size)
        self.weight.data[keep] = rows[keep] * norm
        return int(present.sum())

    def _check(self, emb: Tensor, labels: Tensor) -> None:
        check_embeddings(emb, "emb", dim=self.embed_dim)
        check_index(labels, "labels", emb.shape[0], self.num_classes, f"num_classes={self.num_classes}")

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embed_dim={self.embed_dim}, scale={self.scale}, "
            f"margin={self.margin}, sub_centers={self.sub_centers}"
        )
