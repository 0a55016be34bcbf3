"""``wise_curve.png``: the WiSE-FT trade-off on val, one point per alpha, the chosen one highlighted.

With captions on the val images: val I2I mAP (x) against val T2I R@5 (y), points joined in alpha order
and labelled with their alpha. Without: val I2I mAP against alpha. Needs matplotlib
(``pip install 'mcip[plot]'``); without it no plot is drawn and the JSON still is.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcip.wise.curve import WiseCurve


def plot_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def plot_curve(curve: WiseCurve, path: str | Path) -> Path | None:
    """Draw the curve into ``path``; None (nothing written) when matplotlib is not installed."""
    if not plot_available():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = curve.points
    both = all("t2i_r5" in p for p in points)
    xs = [p["i2i_map"] for p in points] if both else [p["alpha"] for p in points]
    ys = [p["t2i_r5"] for p in points] if both else [p["i2i_map"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(xs, ys, "-o", color="tab:blue", alpha=0.7, zorder=2)
    for p, x, y in zip(points, xs, ys, strict=True):
        end = {0.0: " (start)", 1.0: " (fine-tuned)"}.get(p["alpha"], "")
        ax.annotate(f"{p['alpha']:g}{end}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    chosen = [i for i, p in enumerate(points) if abs(p["alpha"] - curve.alpha) < 1e-9]
    for i in chosen:
        ax.scatter(
            [xs[i]],
            [ys[i]],
            s=180,
            marker="*",
            color="tab:red",
            zorder=3,
            label=f"chosen: alpha {curve.alpha:g}",
        )
    ax.set_xlabel("val I2I mAP (%)" if both else "alpha (0 = start, 1 = fine-tuned)")
    ax.set_ylabel("val T2I R@5 (%)" if both else "val I2I mAP (%)")
    ax.set_title(f"WiSE-FT on val (labels: alpha; selected by {curve.select})")
    ax.grid(alpha=0.3)
    if chosen:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
