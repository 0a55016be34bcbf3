"""WiSE-FT weight-space ensembling (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022).

    theta(alpha) = (1 - alpha) * theta_start + alpha * theta_finetuned,   alpha in [0, 1]

applied tensor by tensor to every floating-point parameter AND floating buffer (BatchNorm running mean
and variance) that differs between the two models, i.e. the parts the fine-tuning trained. Tensors equal
in both are copied exactly; integer buffers (``num_batches_tracked``) come from the fine-tuned model.
``alpha = 0`` gives the starting model bitwise, ``alpha = 1`` the fine-tuned one (computed in float64,
cast back to each tensor's dtype, in between).

``parts`` (names from :data:`mcip.models.base.PARTS`) restricts the interpolation; tensors of the other
parts are the fine-tuned model's. The two models must be one architecture: same backend, preprocessing,
recorded surgery (``model.modifications``, e.g. a dropped projector), tensor names, shapes, dtypes and
parts. Anything else is refused with what differs and what to do.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Real

import torch

from mcip.errors import ConfigError
from mcip.models.base import PARTS, EmbeddingModel, check_part


@dataclass
class MergePlan:
    """The tensors WiSE-FT interpolates between ``start`` and ``finetuned``.

    Attributes:
        pairs: (name in ``net``, start tensor, fine-tuned tensor) of every floating tensor that differs.
        parts: the parts those tensors belong to (the parts that are actually merged), in ``PARTS`` order.
        identical: how many tensors in the merged scope are equal in both models (copied exactly).
        requested: the ``parts`` asked for (None: all).
    """

    pairs: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    parts: tuple[str, ...] = ()
    identical: int = 0
    requested: tuple[str, ...] | None = None

    @torch.no_grad()
    def apply(self, model: EmbeddingModel, alpha: float) -> EmbeddingModel:
        """Write theta(alpha) into ``model`` in place; returns it. ``model`` must be a COPY of the
        fine-tuned model (``pairs`` refers to the fine-tuned model's own tensors)."""
        alpha = check_alpha(alpha)
        state = model.net.state_dict()
        for name, start, tuned in self.pairs:
            target = state[name]
            if alpha == 0:
                value = start
            elif alpha == 1:
                value = tuned
            else:
                value = (1 - alpha) * start.double() + alpha * tuned.to(start.device).double()
            target.copy_(value.to(device=target.device, dtype=target.dtype))
        return model


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float, or :class:`ConfigError` unless it is a finite number in [0, 1]."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not math.isfinite(float(alpha)):
        raise ConfigError(f"WiSE-FT alpha must be a finite number in [0, 1], got {alpha!r}.")
    if not 0 <= float(alpha) <= 1:
        raise ConfigError(
            f"WiSE-FT alpha must lie in [0, 1] (0 = the starting model, 1 = the fine-tuned one), got {alpha}."
        )
    return float(alpha)


def check_parts(parts: Iterable[str] | None) -> tuple[str, ...] | None:
    """Validated part names (None = all parts); an empty list is an error."""
    if parts is None:
        return None
    parts = tuple(parts)
    if not parts:
        raise ConfigError(f"Name at least one part to merge ({', '.join(PARTS)}), or leave parts unset.")
    for part in parts:
        check_part(part)
    return parts


def _listed(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_mergeable(start: EmbeddingModel, finetuned: EmbeddingModel) -> None:
    """Refuse two models that are not one architecture (see the module docstring)."""
    if start.backend != finetuned.backend:
        raise ConfigError(
            f"Cannot merge a {start.backend} model with a {finetuned.backend} model: WiSE-FT averages the "
            "weights of one architecture. Give the model FINETUNED was trained from as START."
        )
    if dict(start.modifications) != dict(finetuned.modifications):
        raise ConfigError(
            f"The models differ in recorded surgery: START {dict(start.modifications) or 'none'}, FINETUNED "
            f"{dict(finetuned.modifications) or 'none'}. Load START the way FINETUNED was built (e.g. with "
            "--drop-projector / model.drop_projector when the image projector was dropped)."
        )
    if start.image_config.to_dict() != finetuned.image_config.to_dict():
        raise ConfigError(
            f"The models preprocess images differently (START {start.image_config.to_dict()}, FINETUNED "
            f"{finetuned.image_config.to_dict()}); merge a model with the one it was fine-tuned from."
        )
    _check_tensors(start.net.state_dict(), finetuned.net.state_dict())
    moved = [n for n in start.net.state_dict() if start.part_of(n) != finetuned.part_of(n)]
    if moved:
        raise ConfigError(
            f"The models assign tensors to different parts (e.g. {_listed(moved)}); they are not the same "
            "architecture. Merge a model with the one it was fine-tuned from."
        )


def _check_tensors(s: dict[str, torch.Tensor], f: dict[str, torch.Tensor]) -> None:
    only_s, only_f = sorted(set(s) - set(f)), sorted(set(f) - set(s))
    if only_s or only_f:
        raise ConfigError(
            "The models have different parameter names (different architectures): "
            + "; ".join(
                [f"only START has {_listed(only_s)}"] * bool(only_s)
                + [f"only FINETUNED has {_listed(only_f)}"] * bool(only_f)
            )
            + ". Merge a model with the one it was fine-tuned from (same spec, same surgery)."
        )
    shapes = [f"{n} {tuple(s[n].shape)} vs {tuple(f[n].shape)}" for n in s if s[n].shape != f[n].shape]
    if shapes:
        raise ConfigError(
            f"The models' tensor shapes differ ({_listed(shapes)}): different architectures or widths "
            "(e.g. another embed_dim). Merge a model with the one it was fine-tuned from."
        )
    dtypes = [f"{n} {s[n].dtype} vs {f[n].dtype}" for n in s if s[n].dtype != f[n].dtype]
    if dtypes:
        raise ConfigError(
            f"The models were loaded with different precisions ({_listed(dtypes)}); load both as fp32."
        )


def plan_merge(
    start: EmbeddingModel, finetuned: EmbeddingModel, parts: Iterable[str] | None = None
) -> MergePlan:
    """Check the two models and list the tensors WiSE-FT interpolates (see :class:`MergePlan`)."""
    requested = check_parts(parts)
    check_mergeable(start, finetuned)
    s_state, f_state = start.net.state_dict(), finetuned.net.state_dict()
    plan = MergePlan(requested=requested)
    merged = set()
    for name, tuned in f_state.items():
        part = finetuned.part_of(name)
        if requested is not None and part not in requested:
            continue
        begin = s_state[name].detach()
        if torch.equal(begin.to(tuned.device), tuned):
            plan.identical += 1
        elif tuned.is_floating_point():
            plan.pairs.append((name, begin, tuned.detach()))
            merged.add(part)
    plan.parts = tuple(p for p in PARTS if p in merged)
    return plan


def merge_models(
    start: EmbeddingModel, finetuned: EmbeddingModel, alpha: float, parts: Iterable[str] | None = None
) -> EmbeddingModel:
    """A new model with theta(alpha) = (1 - alpha) * start + alpha * finetuned (module docstring).

    Args:
        start: the model fine-tuning started from (e.g. the zero-shot CLIP).
        finetuned: the fine-tuned model; the result is a copy of it (spec, surgery, tokenizer).
        alpha: in [0, 1]; 0 = ``start`` bitwise, 1 = ``finetuned`` bitwise.
        parts: merge only these parts (``PARTS`` names); other tensors are ``finetuned``'s. None: all.

    Returns:
        The merged model in eval mode; ``start`` and ``finetuned`` are unchanged.
    """
    alpha = check_alpha(alpha)
    plan = plan_merge(start, finetuned, parts)
    return plan.apply(copy.deepcopy(finetuned), alpha).eval()


def merge_record(
    start: EmbeddingModel, finetuned: EmbeddingModel, alpha: float, plan: MergePlan
) -> dict[str, object]:
    """What goes into the merged model's metadata (``extra["wise"]``)."""
    return {
        "method": "WiSE-FT: (1 - alpha) * start + alpha * finetuned",
        "start": str(start.spec),
        "finetuned": str(finetuned.spec),
        "alpha": float(alpha),
        "parts": list(plan.parts),
        "parts_requested": list(plan.requested) if plan.requested is not None else "all",
        "tensors_interpolated": len(plan.pairs),
        "tensors_identical": plan.identical,
    }
