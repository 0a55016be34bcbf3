"""``wise_merge``: merge a fine-tuned model with its starting model at a given or val-chosen alpha and save
it as an mcip model directory (what ``mcip merge`` and the pipelines' ``wise`` step call)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcip.data.records import ImageRecord
from mcip.errors import ConfigError
from mcip.models import load_model, save_model
from mcip.models.base import EmbeddingModel
from mcip.models.merge import check_parts, merge_record, plan_merge
from mcip.wise.curve import DEFAULT_TEMPLATES, WiseCurve, class_names, evaluate_curve, write_curve
from mcip.wise.select import (
    DEFAULT_GRID,
    DEFAULT_GUARD,
    GUARD_TOLERANCE,
    check_grid,
    check_guard,
    check_guard_data,
    check_tolerance,
    check_val,
    parse_alpha,
)

ModelArg = EmbeddingModel | str | os.PathLike


@dataclass
class WiseResult:
    """What :func:`wise_merge` did: the saved model, the alpha, the merged parts, the val curve (when
    validation data was given) and the files it wrote."""

    model_dir: Path
    alpha: float
    parts: tuple[str, ...]
    curve: WiseCurve | None
    interpolated: int
    identical: int
    files: dict[str, Path] = field(default_factory=dict)


def _load(model: ModelArg, device: str, drop_projector: bool = False) -> EmbeddingModel:
    if isinstance(model, EmbeddingModel):
        return model
    return load_model(model, device=device, drop_projector=drop_projector)


def wise_merge(
    start: ModelArg,
    finetuned: ModelArg,
    out: str | os.PathLike,
    alpha: float | str = "auto",
    val: Sequence[ImageRecord] | None = None,
    grid: Iterable[float] = DEFAULT_GRID,
    select: str = "combined",
    parts: Iterable[str] | None = None,
    names: Mapping[str, str] | str | os.PathLike | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 64,
    device: str = "cpu",
    start_drop_projector: bool = False,
    curve_dir: str | os.PathLike | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
    gallery: Sequence[ImageRecord] | None = None,
    tolerance: float = GUARD_TOLERANCE,
    guard: Sequence[str] = DEFAULT_GUARD,
    cache_dir: str | os.PathLike | None = None,
) -> WiseResult:
    """Merge ``finetuned`` with ``start`` (WiSE-FT) and save the result to ``out``.

    Args:
        start, finetuned: models or specs / mcip model directories (loaded on ``device``;
            ``start_drop_projector`` drops START's image projector when FINETUNED had it dropped).
        alpha: a number in [0, 1], or ``"auto"``: the alpha of ``grid`` that ``select`` picks on ``val``.
        val: validation records; required for ``"auto"``; with a fixed alpha they give the curve at
            0, alpha and 1 for the summary.
        parts: merge only these parts (default: every part that differs).
        names: label -> class name (or a ``label<TAB>name`` file) for val zero-shot top-1.
        curve_dir: where ``wise_curve.json`` / ``.png`` go (default: ``out``).
        extra: more metadata for the saved model (next to ``extra["wise"]``).
        gallery: seen-class validation: val images query these training images (as the stages do
            under ``data.val_mode=seen_classes``); None: val images query each other.
        tolerance, guard: ``select="guarded"``: the points of val T2I R@5 / zero-shot top-1 an alpha may
            give up, and which of the two it holds (``("t2i", "zeroshot")``; see :mod:`mcip.wise.curve`).
        cache_dir: a feature cache folder; where the models' frozen image stem is registered in it
            (:mod:`mcip.image_stems`), the curve runs only the image encoder above the stem.

    Everything that can be checked without the models (alpha, grid, parts, val, names) is checked
    before they are loaded; the models' compatibility before any merging.
    """
    alpha = parse_alpha(alpha)
    grid = check_grid(grid if alpha == "auto" else (0.0, alpha, 1.0))
    parts, tolerance, guard = check_parts(parts), check_tolerance(tolerance), check_guard(guard)
    names = _check_val(alpha, val, select, names, guard)
    start, finetuned = _load(start, device, start_drop_projector), _load(finetuned, device)
    plan = plan_merge(start, finetuned, parts)
    work = copy.deepcopy(finetuned)
    curve = None
    if val is not None:
        fixed = None if alpha == "auto" else alpha
        curve = evaluate_curve(
            plan, work, val, grid, select, names, templates, batch_size, progress, fixed, gallery,
            tolerance, guard, cache_dir,
        )  # fmt: skip
        alpha = curve.alpha
    plan.apply(work, alpha)
    files = _save(work, out, merge_record(start, finetuned, alpha, plan), curve, curve_dir, extra)
    return WiseResult(files["model"], float(alpha), plan.parts, curve, len(plan.pairs), plan.identical, files)


def _check_val(alpha, val, select: str, names, guard) -> dict[str, str] | None:
    """What ``val`` must give for ``alpha`` and ``select`` (before any model loads); the class names."""
    if alpha == "auto" and val is None:
        raise ConfigError(
            "alpha=auto picks alpha on validation data: give validation records "
            "(mcip merge --val VAL_MANIFEST), or a fixed alpha."
        )
    if val is not None:
        check_val(val, select if alpha == "auto" else "i2i")
    names = class_names(names, val)
    if alpha == "auto":
        check_guard_data(select, guard, bool(names))
    return names


def _save(work, out, record: dict, curve: WiseCurve | None, curve_dir, extra) -> dict[str, Path]:
    """The merged model (its ``wise`` record with the curve's choice) and the curve's files."""
    if curve is not None:
        curve.info.update(start=record["start"], finetuned=record["finetuned"])
        record |= {"select": curve.select, "reason": curve.reason, "curve": curve.points}
    model_dir = save_model(work.eval(), out, extra={**(extra or {}), "wise": record})
    files = {"model": model_dir}
    if curve is not None:
        files |= write_curve(curve, curve_dir or model_dir)
    return files


COLUMNS = ("i2i_map", "t2i_r5", "t2i_r1", "t2i_r10", "zeroshot_top1", "combined")


def format_summary(result: WiseResult) -> str:
    """What ``mcip merge`` prints: alpha, merged parts, val numbers at 0, the chosen alpha and 1."""
    curve = result.curve
    how = "given" if curve is None or curve.given else "chosen on val"
    lines = [
        f"WiSE-FT: alpha {result.alpha:g} ({how}; 0 = start, 1 = fine-tuned)",
        f"merged parts: {', '.join(result.parts) or 'none (the models are equal)'} ({result.interpolated} "
        f"tensors interpolated, {result.identical} equal in both copied)",
    ]
    if curve is not None:
        lines += _curve_table(curve, result.alpha)
    lines.append("wrote " + ", ".join(str(p) for p in result.files.values()))
    if curve is not None and "plot" not in result.files:
        lines.append("(no wise_curve.png: it needs matplotlib: pip install 'mcip[plot]')")
    return "\n".join(lines)


def _curve_table(curve: WiseCurve, alpha: float) -> list[str]:
    cols = [c for c in COLUMNS if any(c in p for p in curve.points)]
    lines = [
        f"val: {curve.info.get('val_images')} images ({curve.info.get('val_captioned')} with captions), "
        f"selected by {curve.select} ({curve.metric})",
        f"  {'alpha':<22}" + "".join(f"{c:>14}" for c in cols),
    ]
    rows = {0.0: ["start"], 1.0: ["fine-tuned"]}
    rows.setdefault(alpha, []).insert(0, "chosen")
    for a in sorted(rows):
        point = curve.at(a)
        if point is not None:
            label = f"{a:g} ({', '.join(rows[a])})"
            lines.append(f"  {label:<22}" + "".join(f"{point.get(c, float('nan')):>14.3f}" for c in cols))
    return [*lines, f"why: {curve.reason}"]
