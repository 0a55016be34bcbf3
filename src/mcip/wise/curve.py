"""Choosing the WiSE-FT alpha on validation data (SPEC section 8), and merging with it.

For each alpha of a grid the merged model theta(alpha) (:mod:`mcip.models.merge`) re-encodes the val
images (its image side changes with alpha) and is validated like a training stage
(:class:`mcip.engine.validate.Validator`): val I2I mAP, val T2I R@1/5/10 where val images have captions,
and val zero-shot top-1 where class names are given. ``combined`` is the mean of I2I mAP and T2I R@5,
each relative to alpha = 0 (the starting model), as in stage selection. ``select`` (``combined`` |
``i2i`` | ``t2i``) picks the alpha with the highest value (ties: the smaller alpha, closer to the start).
``guarded`` picks the highest val I2I mAP among the alphas whose val T2I R@5 and val zero-shot top-1
(when class names are given) each stay within ``tolerance`` points (default 0.5) of alpha 0: image
search gained only where the text side is kept (the rule the guard's target states on test). ``guard``
names the sides held (default both; ``("zeroshot",)`` when Re-A follows the merge: re-aligning the text
tower to the merged image tower is Re-A's job, so an alpha is not refused for the T2I it will recover,
while val zero-shot is held). Alpha 0 always qualifies, so the start is the answer when every merge
costs text quality. The grid always contains 0, the reference of ``combined`` and ``guarded``.

Writes ``wise_curve.json`` (every alpha's numbers, the chosen alpha and why) and ``wise_curve.png``
(:mod:`mcip.wise.plot`).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcip._io import atomic_write_json
from mcip.data.records import ImageRecord, class_index
from mcip.engine.validate import COMBINED_SIDES, Validator, combined_score
from mcip.errors import ConfigError, InputError
from mcip.eval.protocols import evaluate_zeroshot, zeroshot_classifier
from mcip.models import TEXT_PARTS
from mcip.models.base import EmbeddingModel
from mcip.models.merge import MergePlan, plan_merge
from mcip.wise.encode import FrozenText, ValImages
from mcip.wise.select import (
    DEFAULT_GRID,
    DEFAULT_GUARD,
    GUARD_TOLERANCE,
    check_grid,
    check_guard,
    check_guard_data,
    check_tolerance,
    check_val,
    choose_alpha,
    select_key,
)

DEFAULT_TEMPLATES = ("a photo of a {}.",)
CURVE_JSON, CURVE_PNG = "wise_curve.json", "wise_curve.png"


@dataclass
class WiseCurve:
    """Val numbers per alpha (``points``, ascending alpha) and the chosen ``alpha`` with the ``reason``."""

    points: list[dict[str, float]]
    alpha: float
    select: str
    metric: str
    reason: str
    parts: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    given: bool = False  # the alpha was given by the caller, not chosen on val

    def at(self, alpha: float) -> dict[str, float] | None:
        """The point measured at ``alpha`` (None when the grid did not hold it)."""
        return next((p for p in self.points if math.isclose(p["alpha"], alpha, abs_tol=1e-9)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "WiSE-FT (Wortsman et al., CVPR 2022): (1 - alpha) * start + alpha * finetuned",
            "select": self.select,
            "metric": self.metric,
            "chosen_alpha": self.alpha,
            "alpha_given": self.given,
            "reason": self.reason,
            "parts": list(self.parts),
            **self.info,
            "curve": self.points,
        }


def text_available(model: EmbeddingModel) -> bool:
    """True when text embeddings live in the image embedding's space (not after a dropped projector)."""
    with torch.no_grad():
        return model.encode_text(["a"]).shape[-1] == model.embed_dim


def class_names(names: Mapping[str, str] | str | os.PathLike | None, val) -> dict[str, str] | None:
    """Label -> class name from a mapping or a ``label<TAB>name`` file (labels of ``val``)."""
    if names is None or isinstance(names, Mapping):
        return dict(names) if names is not None else None
    from mcip.captions.templates import read_class_names

    if not val:
        raise ConfigError("Class names are used for val zero-shot accuracy; give validation data too.")
    return read_class_names(names, sorted({r.label for r in val}))


# ------------------------------------------------------------------ the curve
def _zeroshot(val, names: dict[str, str], templates: Sequence[str]) -> Callable:
    """Val zero-shot top-1: one class per distinct name, so labels that share a name (e.g. emoji of one
    sub-category, or a name given twice) are one class, as a text query cannot tell them apart."""
    named = {label: names.get(label, label.replace("_", " ")) for label in class_index(val)}
    classes = sorted(set(named.values()))
    position = {name: i for i, name in enumerate(classes)}

    def top1(model: EmbeddingModel, images: torch.Tensor, rows: torch.Tensor) -> float:
        classifier = zeroshot_classifier(model, classes, templates)
        truth = torch.tensor([position[named[val[i].label]] for i in rows.tolist()])
        return evaluate_zeroshot(images, truth, classifier)["top1"]

    return top1


def _measure(model, pixels: ValImages, text: bool, zeroshot, gallery=None) -> dict[str, float]:
    """One alpha: encode the val images once; I2I, T2I (Validator) and zero-shot on those embeddings.
    ``model``: the merged model, or a :class:`FrozenText` view of it; ``gallery``: seen-class
    validation (val images query these training images, re-encoded at every alpha)."""
    val = pixels.val
    images, rows = pixels.encode(model)
    if len(rows) == 0:
        raise InputError(f"None of the {len(val)} validation images could be read; check the manifest.")
    cache = np.full((len(val), images.shape[1]), np.nan, dtype=np.float32)
    cache[rows.numpy()] = images.numpy()
    validator = Validator(model, val, image_cache=cache, text=text)
    if gallery:
        validator.set_gallery(gallery)
    results = validator()
    if zeroshot is not None:
        results["zeroshot_top1"] = zeroshot(model, images, rows)
    return results


def evaluate_curve(
    plan: MergePlan,
    work: EmbeddingModel,
    val: Sequence[ImageRecord],
    grid: Sequence[float],
    select: str = "combined",
    names: dict[str, str] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 64,
    progress: bool = False,
    fixed: float | None = None,
    gallery: Sequence[ImageRecord] | None = None,
    tolerance: float = GUARD_TOLERANCE,
    guard: Sequence[str] = DEFAULT_GUARD,
    cache_dir: str | os.PathLike | None = None,
) -> WiseCurve:
    """Validate theta(alpha) for each alpha of ``grid`` (checked: :func:`check_grid`), written into
    ``work`` (a copy of the fine-tuned model) by ``plan``; ``work`` ends at the last alpha.

    ``fixed``: the alpha is given, not chosen; the curve is only measured (``select`` falls back to
    ``i2i`` when the val data cannot measure it). ``gallery``: seen-class validation, as the stages do
    under ``data.val_mode=seen_classes`` (:meth:`Validator.set_gallery`). ``tolerance``: points of val
    T2I R@5 / zero-shot top-1 that ``select="guarded"`` may give up; ``guard``: which of the two it holds.
    ``cache_dir``: where a frozen image stem's activations are cached (:class:`ValImages`)."""
    tolerance, guard = check_tolerance(tolerance), check_guard(guard)
    text = text_available(work)
    select, metric = select_key(val, select, text, fixed)
    zeroshot = _zeroshot(list(val), names, templates) if names and text else None
    points = []
    work.eval()
    pixels = ValImages(work, val, batch_size, cache_dir=cache_dir)  # decoded (or the stem run) once
    seen = FrozenText(work) if not set(plan.parts) & set(TEXT_PARTS) else work  # text encoded once
    for alpha in grid:
        plan.apply(work, alpha)
        point = {"alpha": alpha, **_measure(seen, pixels, text, zeroshot, gallery)}
        points.append(point)
        if progress:
            print("wise: " + ", ".join(f"{k} {v:.3g}" for k, v in point.items()))
    reference = {k: points[0][k] for k in COMBINED_SIDES if k in points[0]}
    for p in points:
        p["combined"] = combined_score(p, reference)
    alpha, reason = choose_alpha(points, metric, select, tolerance, guard)
    if fixed is not None:
        alpha, reason = fixed, f"alpha {fixed:g} was given (not chosen on val); {reason}"
    info = {"val_images": len(val), "val_captioned": sum(bool(r.captions) for r in val)}
    if select == "guarded":
        info |= {"tolerance": tolerance, "guard": list(guard)}
    return WiseCurve(points, alpha, select, metric, reason, plan.parts, info, fixed is not None)


def wise_curve(
    start: EmbeddingModel,
    finetuned: EmbeddingModel,
    val_records: Sequence[ImageRecord],
    grid: Iterable[float] = DEFAULT_GRID,
    names: Mapping[str, str] | None = None,
    select: str = "combined",
    parts: Iterable[str] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 64,
    progress: bool = False,
    gallery: Sequence[ImageRecord] | None = None,
    tolerance: float = GUARD_TOLERANCE,
    guard: Sequence[str] = DEFAULT_GUARD,
) -> WiseCurve:
    """The val curve of WiSE-FT between ``start`` and ``finetuned`` and the alpha ``select`` picks (see
    the module docstring). Fails before any merging when ``val_records`` is empty or lacks what
    ``select`` needs. ``names``: label -> class name, for val zero-shot top-1; ``gallery``: seen-class
    validation (val images query these training images)."""
    grid = check_grid(grid)
    tolerance, guard = check_tolerance(tolerance), check_guard(guard)
    check_val(val_records, select, text_available(finetuned))
    check_guard_data(select, guard, bool(names))
    plan = plan_merge(start, finetuned, parts)
    work = copy.deepcopy(finetuned)
    return evaluate_curve(
        plan,
        work,
        val_records,
        grid,
        select,
        class_names(names, val_records),
        templates,
        batch_size,
        progress,
        gallery=gallery,
        tolerance=tolerance,
        guard=guard,
    )


def write_curve(curve: WiseCurve, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``wise_curve.json`` (written atomically) and ``wise_curve.png`` (when matplotlib is installed)."""
    from mcip.wise.plot import plot_curve

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CURVE_JSON, curve.to_dict(), indent=2)
    files = {"json": out / CURVE_JSON}
    plot = plot_curve(curve, out / CURVE_PNG)
    if plot is not None:
        files["plot"] = plot
    return files
