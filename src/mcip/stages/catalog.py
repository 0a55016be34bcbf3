"""Every stage and pipeline step, registered: importing this module imports each one's module, which
registers it where it is defined (``@register_stage`` / ``register_step``, :mod:`mcip.stages.registry`).
Whatever needs an entry (its defaults, Task, validation metric, builder) looks it up here."""

from __future__ import annotations

import mcip.stages.align
import mcip.stages.gpr
import mcip.stages.mcip
import mcip.stages.realign
import mcip.stages.wise_step  # noqa: F401  (each module registers its stage)
from mcip.stages.registry import STAGES, StageSpec


def stage_entry(name: str) -> StageSpec:
    """The registry entry of stage (or pipeline step) ``name``; unknown names fail with the valid ones."""
    return STAGES.get(name)


def image_stages() -> tuple[str, ...]:
    """The stages that train the image tower (+ projector): WiSE-FT after them merges those parts."""
    return tuple(n for n in STAGES.names() if STAGES.get(n).trains == "image")
