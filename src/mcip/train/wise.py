"""Choosing the WiSE-FT alpha on validation data (SPEC section 8), and merging with it.

For each alpha of a grid the merged model theta(alpha) (:mod:`mcip.models.merge`) re-encodes the val
images (its image side changes with alpha) and is validated like a training stage
(:class:`mcip.train.validate.Validator`): val I2I mAP, val T2I R@1/5/10 where val images have captions,
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
(:mod:`mcip.train.wise_plot`).
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
from mcip.errors import ConfigError, InputError
from mcip.eval.protocols import evaluate_zeroshot, zeroshot_classifier
from mcip.models import TEXT_PARTS
from mcip.models.base import EmbeddingModel
from mcip.models.merge import MergePlan, check_alpha, plan_merge
from mcip.train.validate import COMBINED_SIDES, SELECT_KEYS, Validator, combined_score
from mcip.train.wise_encode import FrozenText, ValImages

DEFAULT_GRID = tuple(i / 10 for i in range(11))
DEFAULT_TEMPLATES = ("a photo of a {}.",)
GUARD_TOLERANCE = 0.5  # points of val T2I R@5 / zero-shot top-1 that select="guarded" may give up
GUARDED_SIDES = {"t2i_r5": "val T2I R@5", "zeroshot_top1": "val zero-shot top-1"}  # key -> words
GUARD_NAMES = {"t2i": "t2i_r5", "zeroshot": "zeroshot_top1"}  # the names ``guard`` takes -> keys
DEFAULT_GUARD = ("t2i", "zeroshot")
WISE_SELECT_KEYS = {**SELECT_KEYS, "guarded": "i2i_map"}  # select -> the key the alpha maximises
SELECT_WORDS = {
    "combined": "combined (mean of val I2I mAP and val T2I R@5, each relative to alpha 0)",
    "i2i": "val I2I mAP",
    "t2i": "val T2I R@5",
    "guarded": "val I2I mAP",
}
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


# ------------------------------------------------------------------ arguments
def parse_alpha(value: object) -> float | str:
    """``"auto"`` or a finite number in [0, 1] (strings such as ``"0.4"`` are parsed)."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"alpha must be 'auto' or a number in [0, 1], got {value!r}.") from None
    return check_alpha(value)


def check_grid(grid: Iterable[object]) -> tuple[float, ...]:
    """Sorted, de-duplicated alphas in [0, 1], with 0 (the reference of ``combined``) added."""
    values = {check_alpha(a) for a in grid}
    if not values:
        raise ConfigError("The alpha grid is empty; give values in [0, 1], e.g. 0,0.25,0.5,0.75,1.")
    return tuple(sorted(values | {0.0}))


def parse_grid(text: str) -> tuple[float, ...]:
    """``"0,0.25,0.5"`` -> checked grid (:func:`check_grid`)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"The alpha grid must be comma-separated numbers, e.g. 0,0.5,1; got {text!r}."
        ) from None
    return check_grid(values)


def check_tolerance(value: object) -> float:
    """A finite number of points >= 0 (``select="guarded"``)."""
    try:
        tol = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        tol = math.nan
    if not (math.isfinite(tol) and tol >= 0):
        raise ConfigError(f"The guard's tolerance must be a number of points >= 0 (e.g. 0.5), got {value!r}.")
    return tol


def check_guard(value: object) -> tuple[str, ...]:
    """The sides ``select="guarded"`` holds: a non-empty subset of :data:`GUARD_NAMES`, as names or a
    comma-separated string (``"t2i,zeroshot"``)."""
    names = value.split(",") if isinstance(value, str) else list(value or ())  # type: ignore[call-overload]
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    unknown = sorted(set(names) - set(GUARD_NAMES))
    if not names or unknown:
        raise ConfigError(
            f"The guard holds {', '.join(GUARD_NAMES)} (one or both, e.g. t2i,zeroshot); got {value!r}."
        )
    return tuple(n for n in GUARD_NAMES if n in names)


def check_guard_data(select: str, guard: Sequence[str], has_names: bool) -> None:
    """Before any merging: a guard that holds only zero-shot needs class names (``select="guarded"``
    already needs captions, so T2I is always measurable)."""
    if select == "guarded" and tuple(guard) == ("zeroshot",) and not has_names:
        raise ConfigError(
            "select=guarded with guard zeroshot holds val zero-shot top-1, which needs class names: give "
            "--names (wise.names: a 'label<TAB>name' file), or guard t2i as well."
        )


def check_val(val: Sequence[ImageRecord] | None, select: str, text: bool = True) -> str:
    """The result key ``select`` picks, or an error saying what the validation data lacks."""
    if select not in WISE_SELECT_KEYS:
        raise ConfigError(f"select must be one of {', '.join(WISE_SELECT_KEYS)}; got {select!r}.")
    if not val:
        raise InputError(
            "WiSE-FT picks alpha on validation images, but there are none: give a validation manifest "
            "(mcip merge --val; in a pipeline data.val or data.val_fraction > 0), or a fixed alpha."
        )
    if select != "i2i" and not text:
        raise ConfigError(
            f"select={select} needs T2I, but the image embedding has no matching text embedding (the "
            "image projector was dropped); use select=i2i."
        )
    if select != "i2i" and not any(r.captions for r in val):
        raise ConfigError(
            f"select={select} needs captions on the validation images, and none of the {len(val)} has "
            "any: give a manifest with a captions column, or use select=i2i."
        )
    return WISE_SELECT_KEYS[select]


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
def _selection(val, select: str, text: bool, fixed: float | None) -> tuple[str, str]:
    """(select, its result key); a given alpha needs only val images (then i2i if nothing else)."""
    if fixed is None:
        return select, check_val(val, select, text)
    check_val(val, "i2i")
    try:
        return select, check_val(val, select, text)
    except ConfigError:
        return "i2i", WISE_SELECT_KEYS["i2i"]


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


def _guarded_sides(start: dict[str, float], guard: Sequence[str] = DEFAULT_GUARD) -> list[str]:
    """The sides of ``guard`` (keys of :data:`GUARDED_SIDES`) the start measured; fails when it measured
    none of them (e.g. a zero-shot guard without class names)."""
    sides = [GUARD_NAMES[g] for g in guard]
    measured = [k for k in sides if math.isfinite(start.get(k, math.nan))]
    if not measured:
        raise InputError(
            f"select=guarded holds {' and '.join(GUARDED_SIDES[k] for k in sides)}, which the val data "
            "cannot measure: give class names (--names / wise.names) for zero-shot, val images with "
            "captions for T2I, or guard a side the data has (--guard / wise.guard)."
        )
    return measured


def _kept(point: dict[str, float], start: dict[str, float], sides: list[str], tolerance: float) -> bool:
    """Every side of ``sides`` is within ``tolerance`` points of the start at ``point``."""
    return all(point.get(k, -math.inf) >= start[k] - tolerance for k in sides)


def _choose(
    points: list[dict[str, float]],
    metric: str,
    select: str,
    tolerance: float = GUARD_TOLERANCE,
    guard: Sequence[str] = DEFAULT_GUARD,
) -> tuple[float, str]:
    scored = [p for p in points if math.isfinite(p.get(metric, math.nan))]
    if not scored:
        raise InputError(f"No alpha could be scored on val {metric}; check the validation data.")
    start, last = points[0], points[-1]
    guarded = select == "guarded"
    sides = _guarded_sides(start, guard) if guarded else []
    candidates = [p for p in scored if _kept(p, start, sides, tolerance)] if guarded else scored
    best = max(candidates or [start], key=lambda p: p[metric])  # the first maximum: the smallest alpha
    what = SELECT_WORDS[select]
    if guarded:
        what += (
            f" among the alphas whose {' and '.join(GUARDED_SIDES[k] for k in sides)} stay within "
            f"{tolerance:g} points of alpha 0 ({len(candidates)} of {len(points)} do)"
        )
    reason = (
        f"alpha {best['alpha']:g} has the highest {what}: {best[metric]:.4g}; alpha 0 (start) "
        f"{start[metric]:.4g}, alpha {last['alpha']:g} {last[metric]:.4g}"
    )
    return best["alpha"], reason


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
) -> WiseCurve:
    """Validate theta(alpha) for each alpha of ``grid`` (checked: :func:`check_grid`), written into
    ``work`` (a copy of the fine-tuned model) by ``plan``; ``work`` ends at the last alpha.

    ``fixed``: the alpha is given, not chosen; the curve is only measured (``select`` falls back to
    ``i2i`` when the val data cannot measure it). ``gallery``: seen-class validation, as the stages do
    under ``data.val_mode=seen_classes`` (:meth:`Validator.set_gallery`). ``tolerance``: points of val
    T2I R@5 / zero-shot top-1 that ``select="guarded"`` may give up; ``guard``: which of the two it holds."""
    tolerance, guard = check_tolerance(tolerance), check_guard(guard)
    text = text_available(work)
    select, metric = _selection(val, select, text, fixed)
    zeroshot = _zeroshot(list(val), names, templates) if names and text else None
    points = []
    work.eval()
    pixels = ValImages(work, val, batch_size)  # decoded once
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
    alpha, reason = _choose(points, metric, select, tolerance, guard)
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
    from mcip.train.wise_plot import plot_curve

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CURVE_JSON, curve.to_dict(), indent=2)
    files = {"json": out / CURVE_JSON}
    plot = plot_curve(curve, out / CURVE_PNG)
    if plot is not None:
        files["plot"] = plot
    return files
