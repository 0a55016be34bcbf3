"""Token states to one vector per text: the poolings of composed text towers (shared with the split tower)."""

from __future__ import annotations

import torch

POOLINGS = ("mean", "cls")


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, L, F) token states + (B, L) mask -> (B, F): masked mean, or the first ([CLS]) token."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
