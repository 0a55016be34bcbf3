"""How WiSE-FT chooses alpha (SPEC section 8): the settings (alpha, grid, ``select``, the guard and its
tolerance), checked before anything is merged, and the choice among the measured points of a curve
(:mod:`mcip.wise.curve`): the highest val value of ``select``'s key, and for ``guarded`` only among the
alphas that keep the guarded sides within ``tolerance`` points of alpha 0."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from mcip.data.records import ImageRecord
from mcip.engine.validate import SELECT_KEYS
from mcip.errors import ConfigError, InputError
from mcip.models.merge import check_alpha

DEFAULT_GRID = tuple(i / 10 for i in range(11))
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


def select_key(val, select: str, text: bool, fixed: float | None) -> tuple[str, str]:
    """(select, its result key); a given alpha needs only val images (then i2i if nothing else)."""
    if fixed is None:
        return select, check_val(val, select, text)
    check_val(val, "i2i")
    try:
        return select, check_val(val, select, text)
    except ConfigError:
        return "i2i", WISE_SELECT_KEYS["i2i"]


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


def choose_alpha(
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
