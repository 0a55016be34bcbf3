"""Reports in the paper's Table 1 layout: JSON (everything), CSV and Markdown (one row per model), and the
teaser plot (I2I average against T2I average and against zero-shot average, arrows from the base model to
the others).

Absent data is never silently dropped: a missing column shows ``n/a`` and every average over a family
with missing columns says how many columns it covers, e.g. ``61.2 (3/4)``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from mcip.eval.runner import ModelReport

FAMILIES = (("i2i", "I2I"), ("knn", "k-NN"), ("zeroshot", "zero-shot"), ("t2i", "T2I"))


def _value(report: ModelReport, name: str) -> float | None:
    result = report.results.get(name)
    value = result.table1_value if result else None
    return None if value is None or math.isnan(value) else value


def averages(report: ModelReport, columns: dict[str, list[str]]) -> dict[str, tuple[float | None, int, int]]:
    """Per family and ``AVG``: (mean over present columns or None, present count, column count)."""
    out = {}
    everything = []
    for family, names in columns.items():
        values = [v for n in names if (v := _value(report, n)) is not None]
        everything += values
        out[family] = (sum(values) / len(values) if values else None, len(values), len(names))
    total = sum(len(n) for n in columns.values())
    out["AVG"] = (sum(everything) / len(everything) if everything else None, len(everything), total)
    return out


def _fmt(avg: tuple[float | None, int, int]) -> str:
    value, present, total = avg
    if value is None:
        return "n/a"
    return f"{value:.1f}" if present == total else f"{value:.1f} ({present}/{total})"


def group_columns(benchmarks: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """(name, family) pairs -> family -> names, in Table 1 family order."""
    columns: dict[str, list[str]] = {f: [] for f, _ in FAMILIES}
    for name, family in benchmarks:
        columns.setdefault(family, []).append(name)
    return {f: names for f, names in columns.items() if names}


def markdown_table(reports: Sequence[ModelReport], benchmarks: Sequence[tuple[str, str]]) -> str:
    columns = group_columns(benchmarks)
    titles = dict(FAMILIES)
    names = [n for ns in columns.values() for n in ns]
    header = ["model", *names, *(f"{titles.get(f, f)} avg" for f in columns), "AVG"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in reports:
        cells = [f"{v:.1f}" if (v := _value(r, n)) is not None else "n/a" for n in names]
        avgs = averages(r, columns)
        cells += [_fmt(avgs[f]) for f in columns] + [_fmt(avgs["AVG"])]
        lines.append("| " + " | ".join([r.model, *cells]) + " |")
    groups = " | ".join(f"{titles.get(f, f)}: {', '.join(ns)}" for f, ns in columns.items())
    return (
        "\n".join(lines)
        + f"\n\nColumns by family: {groups}. `n/a`: data absent or not applicable; `(k/n)`: average over k of n columns.\n"
    )


def write_report(
    reports: Sequence[ModelReport], benchmarks: Sequence[tuple[str, str, str]], out_dir: str | Path
) -> dict[str, Path]:
    """Write results.json, table1.csv, table1.md and teaser.png (when matplotlib is installed).

    ``benchmarks``: (name, family, table1 metric) in column order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = [(n, f) for n, f, _ in benchmarks]
    columns = group_columns(pairs)
    paths = {"json": out / "results.json", "csv": out / "table1.csv", "markdown": out / "table1.md"}
    data = {
        "benchmarks": [{"name": n, "family": f, "table1_metric": m} for n, f, m in benchmarks],
        "models": [
            {
                "model": r.model,
                "seconds": round(r.seconds, 2),
                "missing": r.missing,
                "notes": r.notes,
                "results": {n: vars(res) for n, res in r.results.items()},
                "averages": {
                    k: {"value": v, "present": p, "columns": t}
                    for k, (v, p, t) in averages(r, columns).items()
                },
            }
            for r in reports
        ],
    }
    paths["json"].write_text(json.dumps(data, indent=2, default=str))
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", *[n for n, _ in pairs], *(f"{fam}_avg" for fam in columns), "avg"])
        for r in reports:
            avgs = averages(r, columns)
            row = [_value(r, n) for n, _ in pairs] + [avgs[fam][0] for fam in columns] + [avgs["AVG"][0]]
            writer.writerow([r.model, *["" if v is None else f"{v:.4f}" for v in row]])
    paths["markdown"].write_text(markdown_table(reports, pairs))
    plot = teaser_plot(reports, columns, out / "teaser.png")
    if plot is not None:
        paths["plot"] = plot
    return paths


def teaser_plot(
    reports: Sequence[ModelReport],
    columns: dict[str, list[str]],
    path: Path,
    curve: Sequence[dict] | None = None,
) -> Path | None:
    """I2I average (x) against T2I average and against zero-shot average (y); arrows from the first model
    (the base) to each other model. ``curve``: a WiSE-FT curve on val (dicts with ``alpha``, ``i2i_map``,
    ``t2i_r5`` and optionally ``chosen``) drawn in a last panel, so the whole trade-off shows, not two
    points. Returns None when matplotlib is missing or a family is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [f for f in ("t2i", "zeroshot") if f in columns]
    if "i2i" not in columns or not panels:
        return None
    n = len(panels) + (1 if curve else 0)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.5), squeeze=False)
    if curve:
        _curve_panel(axes[0][-1], curve)
    for ax, family in zip(axes[0], panels, strict=False):
        points = []
        for r in reports:
            avgs = averages(r, columns)
            x, y = avgs["i2i"][0], avgs[family][0]
            if x is not None and y is not None:
                points.append((r.model, x, y))
        for i, (name, x, y) in enumerate(points):
            ax.scatter([x], [y], s=40, zorder=3)
            ax.annotate(
                Path(name).name if "/" in name else name,
                (x, y),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
            )
            if i > 0:
                ax.annotate(
                    "", xy=(x, y), xytext=points[0][1:], arrowprops={"arrowstyle": "->", "alpha": 0.6}
                )
        ax.set_xlabel("I2I average (%)")
        ax.set_ylabel(f"{dict(FAMILIES)[family]} average (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Image-to-image vs text-side quality (test split; arrows: from the base model)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _curve_panel(ax, curve: Sequence[dict]) -> None:
    """val I2I mAP (x) against val T2I R@5 (y) along a WiSE-FT curve, each point labelled with alpha."""
    xs, ys = [p["i2i_map"] for p in curve], [p["t2i_r5"] for p in curve]
    ax.plot(xs, ys, "-o", ms=4, color="tab:purple", zorder=2)
    for p in curve:
        ax.annotate(
            f"{p['alpha']:g}",
            (p["i2i_map"], p["t2i_r5"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
        if p.get("chosen"):
            ax.scatter([p["i2i_map"]], [p["t2i_r5"]], s=140, facecolors="none", edgecolors="red", zorder=3)
    ax.set_xlabel("val I2I mAP (%)")
    ax.set_ylabel("val T2I R@5 (%)")
    ax.set_title("WiSE-FT: base (0) -> fine-tuned (1), val split; circled: chosen", fontsize=9)
    ax.grid(alpha=0.3)
