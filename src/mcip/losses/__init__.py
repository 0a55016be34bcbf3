"""Losses: InfoNCE and SigLIP (alignment), ArcMargin, MCArcMargin and their MCIP combination.

Build one by name with :func:`create_loss`; :func:`list_losses` gives the valid names.
Every angle (margin) is in radians and every embedding argument is ``(B, D)``.
"""

from __future__ import annotations

import inspect

from torch import nn

from mcip.errors import ConfigError
from mcip.losses.arcmargin import ArcMarginLoss
from mcip.losses.drift import EmbeddingDriftLoss
from mcip.losses.infonce import InfoNCELoss
from mcip.losses.mcarcmargin import MCArcMarginLoss
from mcip.losses.mcip import MCIPLoss
from mcip.losses.siglip import SigLIPLoss
from mcip.registry import Registry

__all__ = [
    "LOSSES",
    "ArcMarginLoss",
    "EmbeddingDriftLoss",
    "InfoNCELoss",
    "MCArcMarginLoss",
    "MCIPLoss",
    "SigLIPLoss",
    "create_loss",
    "list_losses",
    "loss_settings",
]

LOSSES: Registry[type[nn.Module]] = Registry("loss")
LOSSES.register("infonce")(InfoNCELoss)
LOSSES.register("siglip")(SigLIPLoss)
LOSSES.register("arcmargin")(ArcMarginLoss)
LOSSES.register("mcarcmargin")(MCArcMarginLoss)
LOSSES.register("mcip")(MCIPLoss)
# EmbeddingDriftLoss is a regulariser the image stages add (loss.distill_weight), not a stage loss.


def loss_settings(name: str) -> dict[str, object]:
    """The settings of the loss registered as ``name`` with their defaults (defined once, in the loss's
    signature): its constructor arguments that have a default. The others (``num_classes``,
    ``embed_dim``) are given by the stage that builds it.

    >>> loss_settings("mcarcmargin")
    {'scale': 30.0, 'margin': 0.1, 'hard_caption_weight': 0.1}
    """
    params = inspect.signature(LOSSES.get(name)).parameters.values()
    return {p.name: p.default for p in params if p.default is not p.empty}


def create_loss(name: str, **kwargs: object) -> nn.Module:
    """Build the loss registered as ``name`` with its constructor arguments (the stage's, such as
    ``num_classes``, and its settings, see :func:`loss_settings`): ``create_loss("mcip", num_classes=C,
    embed_dim=D, mc_weight=0.25)``.

    Unknown names fail with the list of valid ones; unknown or missing arguments fail with the
    loss's signature.

    >>> create_loss("arcmargin", num_classes=10, embed_dim=64).margin
    0.1
    """
    cls = LOSSES.get(name)
    params = inspect.signature(cls).parameters
    usage = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params.values())
    unknown = sorted(set(kwargs) - set(params))
    missing = [p.name for p in params.values() if p.default is p.empty and p.name not in kwargs]
    if unknown or missing:
        problem = f"unknown argument(s) {unknown}" if unknown else f"missing argument(s) {missing}"
        raise ConfigError(f"Loss '{name}': {problem}. Its arguments are: {usage or '(none)'}.")
    return cls(**kwargs)


def list_losses() -> list[str]:
    """Names accepted by :func:`create_loss`, sorted."""
    return LOSSES.names()
