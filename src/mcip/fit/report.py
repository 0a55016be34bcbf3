"""The reading of a ``mcip fit`` result: each row against the starting model in plain words, and the
recommended model (the best image search among the rows that keep the text side)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcip.fit.data import FitData

GUARD_TEXT_SLACK = 0.5  # a row "keeps the text side" when zero-shot and T2I lose at most this many points
FAMILY_WORDS = {"i2i": "image search", "knn": "k-NN", "zeroshot": "zero-shot", "t2i": "text search"}


def _family_averages(reports, columns) -> dict[str, dict[str, float | None]]:
    from mcip.eval.report import averages, group_columns

    grouped = group_columns([(n, f) for n, f, *_ in columns])
    return {r.model: {f: v for f, (v, _, _) in averages(r, grouped).items()} for r in reports}


def _keeps_text(avg: dict, base: dict) -> bool:
    return all(
        avg.get(f) is not None and (base.get(f) is None or avg[f] >= base[f] - GUARD_TEXT_SLACK)
        for f in ("zeroshot", "t2i")
        if f in base
    )


def recommend(reports, columns) -> str:
    """The row to deploy: among the rows with every column measured whose zero-shot and text search each
    stay within :data:`GUARD_TEXT_SLACK` points of the starting model, the best image search (I2I); the
    starting model itself when no fine-tuned row keeps the text side."""
    avgs = _family_averages(reports, columns)
    base = avgs[reports[0].model]
    complete = [r.model for r in reports if not r.missing]
    keeping = [m for m in complete if _keeps_text(avgs[m], base)] or [reports[0].model]
    return max(keeping, key=lambda m: (avgs[m].get("i2i") or float("-inf"), m == reports[0].model))


def fit_reading(
    reports, pairs, recommended: str, data: FitData | None = None, out: Path | None = None
) -> str:
    """Markdown: each row against the starting model in plain words, and the recommended model."""
    if not reports:
        return "No results."
    columns = [(n, f) for n, f in pairs]
    avgs = _family_averages(reports, columns)
    base_name = reports[0].model
    base = avgs[base_name]
    families = [f for f in ("i2i", "knn", "zeroshot", "t2i") if f in base]

    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    def delta(v, b):
        return "n/a" if v is None or b is None else f"{v - b:+.1f}"

    lines = ["# Reading the fit", ""]
    if data is not None:
        lines += [data.summary() + ".", ""]
    lines += [f"Changes against the starting model (**{base_name}**), family averages in points:", ""]
    header = ["row", *(FAMILY_WORDS[f] for f in families), "AVG"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in reports:
        a = avgs[r.model]
        cells = [
            fmt(a.get(f)) if r.model == base_name else f"{fmt(a.get(f))} ({delta(a.get(f), base.get(f))})"
            for f in [*families, "AVG"]
        ]
        lines.append("| " + " | ".join([r.model, *cells]) + " |")
    lines += [""]
    for r in reports[1:]:
        a = avgs[r.model]
        parts = [f"{FAMILY_WORDS[f]} {delta(a.get(f), base.get(f))}" for f in families]
        verdict = "keeps the text side" if _keeps_text(a, base) else "pays for it on the text side"
        lines.append(f"- **{r.model}**: " + ", ".join(parts) + f" ({verdict})")
    rec = avgs[recommended]
    if recommended == base_name:
        best_i2i = max(avgs, key=lambda m: avgs[m].get("i2i") or float("-inf"))
        lines += [
            "",
            f"**Recommended model: {base_name}** (the starting model): no fine-tuned row improved image "
            f"search while keeping zero-shot and text search within {GUARD_TEXT_SLACK} points. If only image "
            f"search matters, {best_i2i} has the best image search ({fmt(avgs[best_i2i].get('i2i'))}).",
        ]
    else:
        lines += [
            "",
            f"**Recommended model: {recommended}**: image search {delta(rec.get('i2i'), base.get('i2i'))}, "
            f"zero-shot {delta(rec.get('zeroshot'), base.get('zeroshot'))}, text search "
            f"{delta(rec.get('t2i'), base.get('t2i'))} (the best image search among the rows whose zero-shot "
            f"and text search stay within {GUARD_TEXT_SLACK} points of the starting model).",
        ]
    if data is not None and not data.val_on_seen:
        lines += ["", "Validation was on classes never trained on (the --val shares no class with --data)."]
    if data is not None and data.test_source.startswith("the val"):
        lines += [
            "",
            "The report is on the val images, which also chose the checkpoints and the WiSE-FT alpha: pass "
            "--test with images used for nothing else for numbers you can trust.",
        ]
    if out is not None:
        lines += ["", "Search with the recommended model:", "", "```bash", serve_command(out), "```"]
    notes = [n for r in reports for n in r.notes]
    if notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in dict.fromkeys(notes))]
    return "\n".join(lines)


def serve_command(out: Path) -> str:
    return f"mcip serve --index {Path(out) / 'index'}"
