"""InfoNCE, the symmetric contrastive loss of CLIP (Radford et al. 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mcip.losses._checks import as_scalar, check_embeddings, check_positive, check_same_shape
from mcip.losses._distributed import gather_rows, world
from mcip.losses._precision import autocast_off, compute_dtype


class InfoNCELoss(nn.Module):
    """CLIP's loss: mean of image->text and text->image cross-entropy over cosine logits.

    ``logits = tau * I @ T^T`` with ``tau = min(exp(logit_scale), max_logit_scale)``;
    ``loss = (CE(logits, diag) + CE(logits^T, diag)) / 2``, each CE averaged over rows.

    The embeddings are used as given: pass L2-normalised embeddings (what ``encode_image`` /
    ``encode_text`` of mcip models return). The loss does not renormalise them.

    Distributed (torch.distributed initialised, world size W > 1, the same local batch B on every rank):
    embeddings of all ranks are gathered so that negatives are global.

    * ``local_loss=True`` (default): this rank's B image rows against all W*B texts, and its B text
      rows against all W*B images. The per-rank value is the mean CE over the local rows, so the mean
      of the per-rank values equals the single-process loss on the full W*B batch.
    * ``local_loss=False``: every rank computes the full (W*B, W*B) logits; the per-rank value equals
      the full-batch loss (more memory and compute, same value).
    * ``gather_with_grad=True`` (default): gradients flow through the gathered copies back to the rank
      that owns them, so with DDP's gradient averaging the update equals the full-batch gradient (for
      both ``local_loss`` settings). ``False`` treats other ranks' embeddings as constants: the loss
      value is unchanged but the gradient misses the terms where this rank's embeddings act as
      negatives elsewhere (with ``local_loss=False`` it is the full-batch gradient divided by W).

    Args:
        local_loss: compute logits only for this rank's rows (see above).
        gather_with_grad: autograd-aware gather (see above).
        max_logit_scale: upper bound on ``tau = exp(logit_scale)``; the bound is applied after ``exp``,
            so the gradient still reaches ``logit_scale`` below the cap.
    """

    def __init__(
        self, local_loss: bool = True, gather_with_grad: bool = True, max_logit_scale: float = 100.0
    ):
        super().__init__()
        check_positive(max_logit_scale, "max_logit_scale")
        self.local_loss = bool(local_loss)
        self.gather_with_grad = bool(gather_with_grad)
        self.max_logit_scale = float(max_logit_scale)

    def forward(self, image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
        """Loss for paired rows.

        Args:
            image_emb: (B, D) L2-normalised image embeddings; row i pairs with ``text_emb[i]``.
            text_emb: (B, D) L2-normalised text embeddings.
            logit_scale: scalar tensor, the LOG of the temperature multiplier (CLIP's ``logit_scale``).

        Returns:
            Scalar loss (float32 for fp16/bf16 inputs, else the input dtype).
        """
        check_embeddings(image_emb, "image_emb")
        check_embeddings(text_emb, "text_emb")
        check_same_shape(image_emb, text_emb, "image_emb", "text_emb")
        dtype = compute_dtype(image_emb, text_emb)
        scale = as_scalar(logit_scale, "logit_scale", image_emb)
        with autocast_off(image_emb):
            image, text = image_emb.to(dtype), text_emb.to(dtype)
            tau = scale.to(dtype).exp().clamp(max=self.max_logit_scale)
            return self._loss(image, text, tau)

    def _loss(self, image: Tensor, text: Tensor, tau: Tensor) -> Tensor:
        """The (local or global) symmetric CE for (B, D) local rows; see the class docstring."""
        rank, world_size = world()
        if world_size == 1:
            return _symmetric_ce(tau * image @ text.T, tau * text @ image.T, offset=0)
        all_image = gather_rows(image, self.gather_with_grad)
        all_text = gather_rows(text, self.gather_with_grad)
        if self.local_loss:
            rows = image.shape[0]
            return _symmetric_ce(tau * image @ all_text.T, tau * text @ all_image.T, offset=rank * rows)
        return _symmetric_ce(tau * all_image @ all_text.T, tau * all_text @ all_image.T, offset=0)

    def extra_repr(self) -> str:
        return (
            f"local_loss={self.local_loss}, gather_with_grad={self.gather_with_grad}, "
            f"max_logit_scale={self.max_logit_scale}"
        )


def _symmetric_ce(logits_per_image: Tensor, logits_per_text: Tensor, offset: int) -> Tensor:
    """(CE(image rows) + CE(text rows)) / 2; row i's positive is column ``offset + i``.

    Both logits are (R, N) with R rows of this rank and N >= offset + R columns.
    """
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device) + offset
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
