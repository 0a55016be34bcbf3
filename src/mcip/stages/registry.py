"""The training stages, one entry each, in the spirit of timm's ``register_model``: a stage's builder is
declared with ``@register_stage(name, ...)`` in the stage's own module (``mcip.stages.gpr``, ``mcip``,
``realign``, ``align``; the ``wise`` step in ``mcip.stages.wise_step``), and the entry carries everything
else the system needs to know about it. :mod:`mcip.stages.catalog` imports every stage's module, so
whatever looks an entry up imports that (the config types never do):

- ``defaults``: its per-stage config values (SPEC section 5; resolution order in ``mcip.stages.resolve``);
- ``task``: the Task class it trains (defined next to its builder);
- ``val_metric``: the validation key it selects checkpoints on with ``loop.select=auto``;
- ``trains``: which side it changes, ``image`` (image tower + projector: WiSE-FT after it merges those),
  ``text`` (image embeddings stay: ``loop.select=i2i`` cannot pick its checkpoints) or ``both``;
- ``builder(model, cfg, inputs, dist) -> Prepared``: the task, its data and its validation;
- ``loss``: the :mod:`mcip.losses` name it trains with (its settings are ``loss:``'s keys), or None
  where ``loss.contrastive`` chooses (realign, align).

``wise`` is a pipeline step (WiSE-FT between a pipeline's start and the previous stage's output), not a
stage: its entry has no builder. :data:`Stage` is the closed set of names, checked against the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mcip.registry import Registry

Stage = Literal["gpr", "realign", "mcip", "align", "wise"]
STAGE_NAMES: tuple[str, ...] = get_args(Stage)
Trains = Literal["image", "text", "both"]


@dataclass
class Prepared:
    """What a stage builder hands to the loop."""

    task: Any  # torch.nn.Module: task(batch) -> {"loss", ...}
    data: Any  # a DataSource (mcip.engine.loop)
    head_params: tuple
    validate: Any  # mcip.engine.validate.Validator | None


@dataclass(frozen=True)
class StageSpec:
    """One registered stage (see the module docstring)."""

    name: str
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    task: type | None = None
    val_metric: str | None = None
    trains: Trains = "both"
    builder: Callable[..., Prepared] | None = None  # None: a pipeline step, not a stage
    loss: str | None = None  # the mcip.losses name it trains with; None: loss.contrastive chooses


STAGES: Registry[StageSpec] = Registry("stage")


def register_stage(
    name: str,
    *,
    description: str,
    defaults: Mapping[str, Any] | None = None,
    task: type | None = None,
    val_metric: str | None = None,
    trains: Trains = "both",
    loss: str | None = None,
) -> Callable[[Callable[..., Prepared]], Callable[..., Prepared]]:
    """Decorator: register ``builder`` as stage ``name`` (a name of :data:`Stage`)."""

    def add(builder: Callable[..., Prepared]) -> Callable[..., Prepared]:
        _add(StageSpec(name, description, dict(defaults or {}), task, val_metric, trains, builder, loss))
        return builder

    return add


def register_step(name: str, *, description: str, trains: Trains = "both") -> None:
    """Register a pipeline step that is not a stage (no builder; the pipeline runner handles it)."""
    _add(StageSpec(name, description, trains=trains))


def _add(spec: StageSpec) -> None:
    if spec.name not in STAGE_NAMES:
        raise ValueError(f"Stage {spec.name!r} is not in mcip.stages.registry.Stage {STAGE_NAMES}.")
    STAGES.register(spec.name)(spec)
