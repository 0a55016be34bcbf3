"""Embedding drift regulariser: keep the fine-tuned image embedding near the starting model's.

    L_drift = mean_i (1 - cos(f_new(x_i), f_start(x_i)))

over a batch of B images, with ``new`` (B, D) the embeddings of the model being trained and ``start``
(B, D) those of a frozen copy of the starting model on the SAME (augmented) pixels. It is the
feature-distillation member of the LwF / ZSCL family of guards against forgetting (Li & Hoiem, "Learning
without Forgetting", 2016; Zheng et al., "Preventing Zero-Shot Transfer Degradation in Continual Learning
of Vision-Language Models" (ZSCL), ICCV 2023): the text tower was aligned to ``f_start``, so every step
that leaves ``f_start`` costs text alignment. The stage adds ``loss.distill_weight * L_drift`` to its
objective; gradients flow into ``new`` only (``start`` is a constant).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mcip.errors import InputError
from mcip.losses._checks import check_embeddings


class EmbeddingDriftLoss(nn.Module):
    """``forward(new (B, D), start (B, D)) -> scalar`` mean cosine distance (0 when identical, <= 2).

    Neither input needs to be normalised (cosine normalises); ``start`` is detached.
    """

    def forward(self, new: Tensor, start: Tensor) -> Tensor:
        check_embeddings(new, "new")
        check_embeddings(start, "start", dim=new.shape[-1])
        if new.shape[0] != start.shape[0]:
            raise InputError(
                f"new has {new.shape[0]} rows but start has {start.shape[0]}; both must embed the same batch."
            )
        cos = F.cosine_similarity(new.float(), start.detach().float(), dim=-1, eps=1e-8)
        return (1.0 - cos).mean()
