"""The MCIP objective: a weighted sum of ArcMargin on class labels and MCArcMargin on captions."""

from __future__ import annotations

from torch import Tensor, nn

from mcip.errors import ConfigError
from mcip.losses._checks import check_non_negative
from mcip.losses.arcmargin import DEFAULT_MARGIN, DEFAULT_SCALE, DEFAULT_SUB_CENTERS, ArcMarginLoss
from mcip.losses.mcarcmargin import DEFAULT_HARD_CAPTION_WEIGHT, MCArcMarginLoss

DEFAULT_MC_WEIGHT = 0.25
"""The weight of MCArcMargin in MCIP: the authors' value (ArcMargin's is ``1 - DEFAULT_MC_WEIGHT``)."""


def convex_weights(mc_weight: float) -> dict[str, float]:
    """``{"arc_weight": 1 - mc_weight, "mc_weight": mc_weight}``: the two weights summing to 1, as the
    authors' 0.75 / 0.25 do (what ``mcip fit --mc-weight`` and the lab's sweep set)."""
    return {"arc_weight": 1 - mc_weight, "mc_weight": mc_weight}


DEFAULT_ARC_WEIGHT = convex_weights(DEFAULT_MC_WEIGHT)["arc_weight"]


class MCIPLoss(nn.Module):
    """``arc_weight * ArcMargin(labels) + mc_weight * MCArcMargin(captions)`` on the same image embedding.

    Both parts share ``scale`` and ``margin`` (radians). The only parameters are the ArcMargin class
    centres (``self.arc.weight``): put ``loss.parameters()`` in their own optimiser group
    (100 x the base learning rate in the paper).

    Args:
        num_classes: C for ArcMargin; labels are 0..C-1.
        embed_dim: D of the joint embedding.
        arc_weight: weight of ArcMargin (>= 0).
        mc_weight: weight of MCArcMargin (>= 0); not both weights 0.
        scale: s for both parts.
        margin: m in radians for both parts.
        sub_centers: ArcMargin centres per class.
        hard_caption_weight: h of MCArcMargin.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        arc_weight: float = DEFAULT_ARC_WEIGHT,
        mc_weight: float = DEFAULT_MC_WEIGHT,
        scale: float = DEFAULT_SCALE,
        margin: float = DEFAULT_MARGIN,
        sub_centers: int = DEFAULT_SUB_CENTERS,
        hard_caption_weight: float = DEFAULT_HARD_CAPTION_WEIGHT,
    ):
        super().__init__()
        check_non_negative(arc_weight, "arc_weight")
        check_non_negative(mc_weight, "mc_weight")
        if arc_weight == 0 and mc_weight == 0:
            raise ConfigError("arc_weight and mc_weight are both 0, so the loss is always 0; set one > 0.")
        self.arc_weight, self.mc_weight = float(arc_weight), float(mc_weight)
        self.arc = ArcMarginLoss(num_classes, embed_dim, scale=scale, margin=margin, sub_centers=sub_centers)
        self.mc = MCArcMarginLoss(scale=scale, margin=margin, hard_caption_weight=hard_caption_weight)

    def forward_parts(
        self, image_emb: Tensor, labels: Tensor, caption_emb: Tensor, caption_owner: Tensor
    ) -> dict[str, Tensor]:
        """``{"loss": weighted sum, "arc": ArcMargin, "mc": MCArcMargin}``, all scalars.

        Args:
            image_emb: (B, D) image embeddings.
            labels: (B,) class indices in 0..C-1.
            caption_emb: (N, D) caption embeddings (frozen text tower; may be cached).
            caption_owner: (N,) index in 0..B-1 of the image each caption belongs to.
        """
        arc = self.arc(image_emb, labels)
        mc = self.mc(image_emb, caption_emb, caption_owner)
        return {"loss": self.arc_weight * arc + self.mc_weight * mc, "arc": arc, "mc": mc}

    def forward(
        self, image_emb: Tensor, labels: Tensor, caption_emb: Tensor, caption_owner: Tensor
    ) -> Tensor:
        """The weighted scalar loss; arguments as in :meth:`forward_parts`."""
        return self.forward_parts(image_emb, labels, caption_emb, caption_owner)["loss"]

    def extra_repr(self) -> str:
        return f"arc_weight={self.arc_weight}, mc_weight={self.mc_weight}"
