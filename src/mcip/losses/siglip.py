"""SigLIP's pairwise sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcip.losses._checks import as_scalar, check_embeddings, check_same_shape
from mcip.losses._distributed import gather_rows, world
from mcip.losses._precision import autocast_off, compute_dtype


class SigLIPLoss(nn.Module):
    """Binary cross-entropy over every image-text pair.

    ``logits = exp(logit_scale) * I @ T^T + logit_bias`` (B, B); ``labels = +1`` on the diagonal and
    ``-1`` elsewhere; ``loss = -sum(logsigmoid(labels * logits)) / B`` (sum over pairs, mean over images).
    Pass L2-normalised embeddings; they are used as given. ``logit_scale`` is not capped (SigLIP models
    learn ``log(t)`` with ``t`` around 10-120 and ``logit_bias`` around -10).

    Distributed (world size W > 1, the same local batch B on every rank): the texts of all ranks are
    gathered with an autograd-aware gather, and this rank's B images are scored against all W*B texts
    (the local positive pairs plus the negative-only pairs with every other rank's texts). The per-rank
    value is ``-(1/B) * sum_{i local, j global} logsigmoid(label_ij * logit_ij)``, so the MEAN of the
    per-rank values equals the single-process loss on the full W*B batch, and DDP's gradient averaging
    yields its gradient. This is what open_clip's ``SigLipLoss`` computes.
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(
        self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float
    ) -> Tensor:
        """Loss for paired rows.

        Args:
            image_emb: (B, D) L2-normalised image embeddings; row i pairs with ``text_emb[i]``.
            text_emb: (B, D) L2-normalised text embeddings.
            logit_scale: scalar tensor, the LOG of the logit multiplier ``t``.
            logit_bias: scalar tensor ``b`` added to every logit.

        Returns:
            Scalar loss (float32 for fp16/bf16 inputs, else the input dtype).
        """
        check_embeddings(image_emb, "image_emb")
        check_embeddings(text_emb, "text_emb")
        check_same_shape(image_emb, text_emb, "image_emb", "text_emb")
        dtype = compute_dtype(image_emb, text_emb)
        scale = as_scalar(logit_scale, "logit_scale", image_emb)
        bias = as_scalar(logit_bias, "logit_bias", image_emb)
        with autocast_off(image_emb):
            image, text = image_emb.to(dtype), text_emb.to(dtype)
            rank, _ = world()
            all_text = gather_rows(text, with_grad=True)
            logits = scale.to(dtype).exp() * image @ all_text.T + bias.to(dtype)
            return _sigmoid_loss(logits, offset=rank * image.shape[0])


def _sigmoid_loss(logits: Tensor, offset: int) -> Tensor:
    """``-sum(logsigmoid(labels * logits)) / R`` for (R, N) logits; row i's positive is column offset + i."""
    rows, cols = logits.shape
    idx = torch.arange(rows, device=logits.device)
    labels = -torch.ones(rows, cols, dtype=logits.dtype, device=logits.device)
    labels[idx, idx + offset] = 1.0
    return -F.logsigmoid(labels * logits).sum() / rows
