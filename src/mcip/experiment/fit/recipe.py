"""The recipe of a ``mcip fit`` run: the settings each stage trains with, given by the user or searched on
val (:mod:`mcip.experiment.fit.search`), and how they become a stage's typed config values.

What is searched and what is fixed (a flag or a ``--set`` of the same key fixes a dimension):

| dimension | flag | ``--set`` keys | searched |
|---|---|---|---|
| image stages' learning rate | ``--lr`` | ``optim.lr``, ``stages.{gpr,mcip}.optim.lr`` | yes |
| their length | ``--epochs`` (a fixed count) | ``loop.epochs`` | early stopping on val |
| MCIP's caption policy | (none) | ``data.captions`` | with a ``--pool`` |
| ``mc_weight`` | ``--mc-weight`` | ``loss.mc_weight`` | full mode |
| ``hard_caption_weight`` | ``--hard-caption-weight`` | ``loss.hard_caption_weight`` | full mode |
| Re-A's learning rate | ``--realign-lr`` | ``stages.realign.optim.lr`` | yes |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcip.experiment.fit.search import HARD_CAPTION_WEIGHTS, MC_WEIGHTS, REALIGN_LR_GRID, SearchSpace
from mcip.losses.mcarcmargin import DEFAULT_HARD_CAPTION_WEIGHT
from mcip.losses.mcip import DEFAULT_MC_WEIGHT, convex_weights

IMAGE_STAGES = ("gpr", "mcip")


def user_keys(overrides: tuple[str, ...]) -> dict[str, str]:
    """The ``--set`` overrides as key -> text value."""
    out = {}
    for item in overrides:
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Given:
    """What the user fixed: flags first, else the matching ``--set`` key; None = chosen by mcip fit."""

    lr: float | None = None
    realign_lr: float | None = None
    epochs: int | None = None
    mc_weight: float | None = None
    hard_caption_weight: float | None = None
    captions: bool = False  # data.captions given with --set

    @classmethod
    def of(cls, s, stage: str | None = None) -> Given:
        keys = user_keys(tuple(s.stage_overrides))

        def pick(flag, *names):
            if flag is not None:
                return flag
            return next((_float(keys[n]) for n in names if n in keys), None)

        image_lr_keys = [
            "optim.lr",
            *(f"stages.{st}.optim.lr" for st in ([stage] if stage else IMAGE_STAGES)),
        ]
        epochs = s.stage_epochs if s.stage_epochs is not None else _float(keys.get("loop.epochs"))
        return cls(
            lr=pick(s.lr, *image_lr_keys),
            realign_lr=pick(s.realign_lr, "stages.realign.optim.lr", "optim.lr"),
            epochs=None if epochs is None else int(epochs),
            mc_weight=pick(s.mc_weight, "loss.mc_weight", "stages.mcip.loss.mc_weight"),
            hard_caption_weight=pick(
                s.hard_caption_weight, "loss.hard_caption_weight", "stages.mcip.loss.hard_caption_weight"
            ),
            captions="data.captions" in keys or "stages.mcip.data.captions" in keys,
        )


def image_space(
    stage: str, given: Given, policies: tuple[str, ...], mode: str, lr: float | None
) -> SearchSpace:
    """The study of an image stage. ``lr``: a rate another image stage of this run chose already (the quick
    mode then keeps it, so ``--method both`` searches the rate once)."""
    fixed_lr = given.lr if given.lr is not None else (lr if mode == "quick" else None)
    if stage != "mcip":
        return SearchSpace(stage, lr=fixed_lr)
    full = mode == "full"
    return SearchSpace(
        stage,
        lr=fixed_lr,
        caption_policies=() if given.captions else policies,
        mc_weights=() if given.mc_weight is not None or not full else MC_WEIGHTS_ORDERED,
        hard_caption_weights=() if given.hard_caption_weight is not None or not full else HARD_ORDERED,
    )


def realign_space(given: Given) -> SearchSpace:
    return SearchSpace("realign", lr=given.realign_lr, lr_grid=REALIGN_LR_GRID)


# the losses' defaults (the authors' values) first: the grid trains with the first
MC_WEIGHTS_ORDERED = (DEFAULT_MC_WEIGHT, *(w for w in MC_WEIGHTS if w != DEFAULT_MC_WEIGHT))
HARD_ORDERED = (
    DEFAULT_HARD_CAPTION_WEIGHT,
    *(w for w in HARD_CAPTION_WEIGHTS if w != DEFAULT_HARD_CAPTION_WEIGHT),
)


def searchable(space: SearchSpace) -> bool:
    return space.lr is None or any(len(v) > 1 for v in space._categorical().values())


def stage_values(stage: str, params: dict[str, Any], caption_files: dict[str, Any]) -> dict[str, Any]:
    """A trial's (or the chosen) settings as typed config values of ``stage``."""
    values: dict[str, Any] = {}
    if "lr" in params and params["lr"] is not None:
        values["optim.lr"] = float(params["lr"])
    if stage == "mcip":
        if params.get("caption_policy") in caption_files:
            values["data.captions"] = str(caption_files[params["caption_policy"]])
        if params.get("mc_weight") is not None:
            values |= {f"loss.{k}": v for k, v in convex_weights(float(params["mc_weight"])).items()}
        if params.get("hard_caption_weight") is not None:
            values["loss.hard_caption_weight"] = float(params["hard_caption_weight"])
    return values


def length_values(stage: str, given: Given, max_epochs: int, patience: int) -> dict[str, Any]:
    """Image stages: a fixed ``--epochs``, else up to ``max_epochs`` with early stopping on val."""
    if stage not in IMAGE_STAGES:
        return {}
    if given.epochs is not None:
        return {"loop.epochs": given.epochs}
    return {"loop.epochs": max_epochs, "loop.early_stopping_patience": patience}
