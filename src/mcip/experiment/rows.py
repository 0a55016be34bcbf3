"""What the experiment trains: the run's settings (:class:`RunSettings`, shared by ``mcip lab run`` and
``mcip fit``) and the rows of its table (:data:`ROWS`), each with the function that makes its model from
a :class:`mcip.experiment.runner.Runner` (``make(runner) -> model``). A new row is one ``make_*`` function
and one :class:`Row`, and both commands get it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mcip.errors import ConfigError
from mcip.losses.mcarcmargin import DEFAULT_HARD_CAPTION_WEIGHT
from mcip.losses.mcip import DEFAULT_MC_WEIGHT

if TYPE_CHECKING:
    from mcip.experiment.runner import Runner

LOG = Callable[[str], None]
GUARD_SELECTS = ("combined", "guarded")  # the WiSE-FT selections the guarded row may use (mcip.wise.select)
GUARD_SIDES = ("t2i", "zeroshot")  # what "guarded" may hold (mcip.wise.select.GUARD_NAMES)
ModelRef = Path | str  # an mcip model folder, or a model spec (the user's starting model)


@dataclass(frozen=True)
class RunSettings:
    """How the rows are trained, shared by both sources. Each stage's other hyper-parameters live in the
    shipped configs the source names (``lab-2sft``/``lab-mcip+rea``, ``fit-2sft``/``fit-mcip+rea``)."""

    stage_epochs: int = 1
    realign_epochs: int = 30  # an upper bound: Re-A stops when val has not improved for realign_patience
    realign_patience: int = 3  # validations (one per epoch) without a new best
    max_steps: int | None = None  # cap on optimiser steps per image stage (quick runs)
    batch_size: int = 64
    num_workers: int = 2
    caption_top_k: int = 10
    caption_min_sim: float = 0.2
    hard_caption_weight: float = DEFAULT_HARD_CAPTION_WEIGHT
    mc_weight: float = DEFAULT_MC_WEIGHT  # MCIP: arc_weight = 1 - mc_weight (mcip.losses.mcip.convex_weights)
    all_rows: bool = False  # also GPR-FT without projector (ICMR'23)
    # the guarded row: an MCIP stage (the MCIP row's model when guard_distill_weight is 0, else one trained
    # with that drift regulariser) merged with the base by WiSE-FT at the alpha of this grid that
    # guard_select picks on val ("combined" or "guarded", holding the guard_sides, see mcip.wise.select),
    # then Re-A selected on "combined"
    wise_grid: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    guard_distill_weight: float = 0.0
    guard_select: str = "combined"
    guard_sides: tuple[str, ...] = GUARD_SIDES
    stage_overrides: tuple[str, ...] = ()  # extra --set overrides for every stage

    def validate(self):
        epochs = [e for e in (self.stage_epochs, self.realign_epochs) if e is not None]
        if min(*epochs, self.batch_size) < 1:
            raise ConfigError("Epochs and batch size must be >= 1.")
        if self.realign_patience < 1:
            raise ConfigError(f"realign_patience must be >= 1, got {self.realign_patience}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 (or None), got {self.max_steps}.")
        if self.mc_weight is not None and not 0 <= self.mc_weight <= 1:
            raise ConfigError(f"mc_weight must be in [0, 1], got {self.mc_weight}.")
        if not self.wise_grid or any(not 0 <= a <= 1 for a in self.wise_grid):
            raise ConfigError(f"wise_grid must hold alphas in [0, 1], got {self.wise_grid}.")
        if not (
            isinstance(self.guard_distill_weight, int | float) and 0 <= self.guard_distill_weight < math.inf
        ):
            raise ConfigError(
                f"guard_distill_weight must be a number >= 0, got {self.guard_distill_weight!r}."
            )
        if self.guard_select not in GUARD_SELECTS:
            raise ConfigError(
                f"guard_select must be one of {', '.join(GUARD_SELECTS)}, got {self.guard_select!r}."
            )
        sides = tuple(self.guard_sides) if isinstance(self.guard_sides, list | tuple) else ()
        if not sides or not set(sides) <= set(GUARD_SIDES):
            raise ConfigError(
                f"guard_sides must be one or both of {', '.join(GUARD_SIDES)}, got {self.guard_sides!r}."
            )
        return self


def make_baseline(run: Runner) -> ModelRef:
    return run.base


def make_gpr_no_proj(run: Runner) -> Path:
    extra = {**run.train_values(), "model.drop_projector": True}
    return run.stage_model("2sft", "gpr", run.base, "gpr-no-proj", extra)


def make_gpr(run: Runner) -> Path:
    return run.stage_model("2sft", "gpr", run.base, "gpr", run.train_values())


def make_2sft(run: Runner) -> Path:
    return run.stage_model("2sft", "realign", run.model_of("gpr"), "2sft", run.train_values())


def make_mcip(run: Runner) -> Path:
    return run.stage_model("mcip+rea", "mcip", run.base, "mcip", run.mcip_values())


def make_mcip_rea(run: Runner) -> Path:
    return run.stage_model("mcip+rea", "realign", run.model_of("mcip"), "mcip-rea", run.train_values())


def make_guarded(run: Runner) -> Path:
    """An MCIP stage (selected on val I2I, the paper's choice): the MCIP row's model, or with
    :attr:`RunSettings.guard_distill_weight` > 0 one trained with that drift regulariser
    (``loss.distill_weight``); merged with the base by WiSE-FT at the alpha :attr:`RunSettings.guard_select`
    picks on val, then Re-A selected on ``combined``. (Selecting the MCIP stage itself on ``combined``
    keeps the start: the text loss it sees is what WiSE-FT and Re-A recover afterwards.)"""
    weight = run.s.guard_distill_weight
    if weight > 0:
        values = {**run.mcip_values(), "loss.distill_weight": weight}
        mcip = run.stage_model("mcip+rea", "mcip", run.base, "guard-mcip", values)
    else:
        mcip = run.model_of("mcip")
    merged = run.wise(mcip, "guard-wise")
    extra = {**run.train_values(), "loop.select": "combined"}
    # at alpha 1 with the MCIP row's stage, this Re-A repeats the MCIP+Re-A row's run with another
    # selection: its record may show the model it would end with (mcip.experiment.reuse)
    same_as = "mcip-rea" if "mcip_rea" in run.made else None
    return run.stage_model("mcip+rea", "realign", merged, "guard-rea", extra, same_as=same_as)


@dataclass(frozen=True)
class Row:
    """One row of the table: ``make(runner)`` trains its model (or finds it trained) and returns it;
    ``method`` is the row's key (the runner keeps each row's model under it, and a row built on another
    asks for it with ``runner.model_of(method)``); ``pipeline`` the method family it belongs to
    (``mcip fit --method``)."""

    name: str
    description: str
    method: str
    make: Callable[[Runner], ModelRef] = field(repr=False)
    extra: bool = False  # only with ``all_rows``
    pipeline: str = ""  # "2sft", "mcip+rea" or "" (the baseline: every run has it)

    def __iter__(self):  # (name, description), as rows were once pairs
        return iter((self.name, self.description))


GUARDED = "MCIP+Re-A (guarded)"
ROWS: tuple[Row, ...] = (
    Row("baseline", "the starting model", "baseline", make_baseline),
    Row(
        "GPR-FT (no proj.)",
        "ArcMargin on the image tower, embedding before the projector (ICMR'23)",
        "gpr_no_proj",
        make_gpr_no_proj,
        extra=True,
        pipeline="2sft",
    ),
    Row("GPR-FT", "ArcMargin on the image tower and projector", "gpr", make_gpr, pipeline="2sft"),
    Row(
        "2SFT",
        "GPR-FT, then Re-A of the text tower (until val T2I stops improving)",
        "sft",
        make_2sft,
        pipeline="2sft",
    ),
    Row(
        "MCIP",
        "ArcMargin + multi-caption ArcMargin on pseudo-captions",
        "mcip",
        make_mcip,
        pipeline="mcip+rea",
    ),
    Row("MCIP+Re-A", "MCIP, then Re-A of the text tower", "mcip_rea", make_mcip_rea, pipeline="mcip+rea"),
    Row(
        GUARDED,
        "MCIP (the lab: with the drift regulariser), WiSE-FT merge with the base (alpha picked on val), "
        "Re-A selected on combined: every choice on val",
        "guarded",
        make_guarded,
        pipeline="mcip+rea",
    ),
)
METHODS = ("mcip+rea", "2sft", "both")


def select_rows(all_rows: bool = False, method: str = "both") -> list[Row]:
    """The rows a run trains, in table order: the baseline and the rows of ``method``."""
    if method not in METHODS:
        raise ConfigError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    wanted = {"2sft", "mcip+rea"} if method == "both" else {method}
    return [r for r in ROWS if (all_rows or not r.extra) and (not r.pipeline or r.pipeline in wanted)]
