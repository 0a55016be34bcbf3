"""The recipe search's report: the trial table (``recipe.md``), its data (``recipe.json``) and the plot of
the val metric against the learning rate (``recipe.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcip.experiment.fit.search import RecipeSearch, TrialRecord


def fmt_value(value: Any) -> str:
    """A value as the trial table shows it."""
    if isinstance(value, float):
        if value and abs(value) < 0.01:  # learning rates: 1e-04, 3e-05, 4.43e-05
            mantissa, exponent = f"{value:.2e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return "n/a" if value is None else str(value)


def write_search_report(search: RecipeSearch, out: Path) -> dict[str, Path]:
    """``recipe.md`` (the trial table), ``recipe.json`` and ``recipe.png`` (val metric against the
    learning rate, one panel per study) in ``out``."""
    from mcip._io import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    records = search.records()
    files = {"recipe": out / "recipe.md", "recipe_json": out / "recipe.json"}
    atomic_write_text(files["recipe"], trial_table(records, search.mode) + "\n")
    data = {
        "mode": search.mode,
        "studies": {
            k: {"metric": v.metric, "best_params": v.best_params, "best_value": v.best_value}
            for k, v in search.results.items()
        },
        "trials": [asdict(r) for r in records],
    }
    atomic_write_json(files["recipe_json"], data)
    plot = search_plot(records, out / "recipe.png")
    if plot is not None:
        files["recipe_plot"] = plot
    return files


def trial_table(records: Sequence[TrialRecord], mode: str) -> str:
    """Markdown: every trial of every study with its settings, val metrics, epochs and time."""
    lines = [f"# Recipe search on val ({mode})", ""]
    for stage in dict.fromkeys(r.study for r in records):
        rows = [r for r in records if r.study == stage]
        keys = sorted({k for r in rows for k in r.params})
        sides = sorted({k for r in rows for k in r.val if k in ("i2i_map", "t2i_r5", "combined")})
        lines += [f"## {stage} (selects on val {rows[0].metric})", ""]
        header = ["trial", *keys, f"best val {rows[0].metric}", *(f"val {s}" for s in sides)]
        header += ["epochs", "best epoch", "seconds", "state"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            cells = [str(r.number) + (" (chosen)" if r.chosen else "")]
            cells += [fmt_value(r.params.get(k)) for k in keys]
            cells += [fmt_value(r.value), *(fmt_value(r.val.get(s)) for s in sides)]
            cells += [fmt_value(r.epochs), fmt_value(r.best_epoch), fmt_value(r.seconds), r.state.lower()]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def search_plot(records: Sequence[TrialRecord], path: Path) -> Path | None:
    """Val metric against the learning rate (log scale), a panel per study; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is optional (pip install 'mcip[plot]'); the table says it all
        return None
    studies = list(dict.fromkeys(r.study for r in records if "lr" in r.params))
    if not studies:
        return None
    fig, axes = plt.subplots(1, len(studies), figsize=(4.5 * len(studies), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], studies, strict=True):
        rows = [r for r in records if r.study == stage and r.value is not None]
        for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
            pts = [(r.params["lr"], r.value) for r in rows if r.state == state]
            if pts:
                ax.scatter(*zip(*pts, strict=True), marker=marker, label=state.lower())
        chosen = [r for r in rows if r.chosen]
        if chosen:
            ax.scatter([chosen[0].params["lr"]], [chosen[0].value], s=160, facecolors="none",
                       edgecolors="red", label="chosen")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"best val {rows[0].metric if rows else ''}")
        ax.set_title(stage)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
