"""The reading of a ``mcip fit`` result: each row against the starting model in plain words, and the
recommended model (the best image search among the rows that keep the text side)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcip.experiment.fit.data import FitData

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
    """The row to deploy, chosen on the VAL ``reports``: among the rows with every column measured whose
    zero-shot and text search each stay within :data:`GUARD_TEXT_SLACK` points of the starting model, the
    best image search (I2I), and among equal image search (a Re-A row has its image stage's image side)
    the best mean of zero-shot and text search; the starting model itself when no fine-tuned row keeps the
    text side."""
    avgs = _family_averages(reports, columns)
    base = avgs[reports[0].model]
    complete = [r.model for r in reports if not r.missing]
    keeping = [m for m in complete if _keeps_text(avgs[m], base)] or [reports[0].model]

    def key(m):  # image search first; on a tie (Re-A keeps the image side) the better text side
        a = avgs[m]
        text = [a[f] for f in ("zeroshot", "t2i") if a.get(f) is not None]
        return (
            a.get("i2i") or float("-inf"),
            sum(text) / len(text) if text else float("-inf"),
            m == reports[0].model,
        )

    return max(keeping, key=key)


def _fmt(v):
    return "n/a" if v is None else f"{v:.1f}"


def _delta(v, b):
    return "n/a" if v is None or b is None else f"{v - b:+.1f}"


def fit_reading(
    reports,
    pairs,
    recommended: str,
    data: FitData | None = None,
    out: Path | None = None,
    val_reports=None,
    search: dict | None = None,
) -> str:
    """Markdown: each row against the starting model in plain words (test figures, with the val figures
    that made every choice beside them), the recipe chosen on val, and the recommended model."""
    if not reports:
        return "No results."
    columns = [(n, f) for n, f in pairs]
    avgs = _family_averages(reports, columns)
    vals = _family_averages(val_reports, columns) if val_reports is not None else {}
    same = val_reports is None or val_reports is reports
    base_name = reports[0].model
    base = avgs[base_name]
    families = [f for f in ("i2i", "knn", "zeroshot", "t2i") if f in base]
    lines = ["# Reading the fit", ""]
    if data is not None:
        lines += [data.summary() + ".", ""]
    where = "val" if same else "test, with [val] beside each"
    lines += [
        f"Changes against the starting model (**{base_name}**), family averages in points ({where}):",
        "",
    ]
    lines += [*_change_table(reports, families, avgs, vals, same), ""]
    for r in reports[1:]:
        a = avgs[r.model]
        parts = [f"{FAMILY_WORDS[f]} {_delta(a.get(f), base.get(f))}" for f in families]
        verdict = "keeps the text side" if _keeps_text(a, base) else "pays for it on the text side"
        lines.append(f"- **{r.model}**: " + ", ".join(parts) + f" ({verdict} on {'val' if same else 'test'})")
    lines += ["", *_recipe_lines(search or {})]
    lines += _recommendation(recommended, base_name, avgs, base, same)
    if data is not None:
        lines += _data_caveats(data)
    if out is not None:
        lines += ["", "Search with the recommended model:", "", "```bash", serve_command(out), "```"]
    notes = [n for r in reports for n in r.notes]
    if notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in dict.fromkeys(notes))]
    return "\n".join(lines)


def _change_table(reports, families: list[str], avgs: dict, vals: dict, same: bool) -> list[str]:
    """The Markdown table of the family averages: each row's change against the first (the starting
    model) in brackets, and its val figure beside it when the report is on test (``same`` False)."""
    base_name = reports[0].model
    base = avgs[base_name]

    def cell(model, f):
        v, text = avgs[model].get(f), _fmt(avgs[model].get(f))
        if model != base_name:
            text += f" ({_delta(v, base.get(f))})"
        if not same and model in vals:
            text += f" [val {_fmt(vals[model].get(f))}]"
        return text

    header = ["row", *(FAMILY_WORDS[f] for f in families), "AVG"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in reports:
        lines.append("| " + " | ".join([r.model, *(cell(r.model, f) for f in [*families, "AVG"])]) + " |")
    return lines


def _data_caveats(data: FitData) -> list[str]:
    """What the data means for the figures: val on unseen classes, a report on val, left-out test copies."""
    lines: list[str] = []
    if not data.val_on_seen:
        lines += ["", "Validation was on classes never trained on (the --val shares no class with --data)."]
    if data.test_source.startswith("the val"):
        lines += [
            "",
            "The report is on the val images, which also chose the recipe, the checkpoints, the WiSE-FT "
            "alpha and the recommended row: pass --test with images used for nothing else for numbers you "
            "can trust.",
        ]
    if data.excluded_test:
        lines += [
            "",
            f"{data.excluded_test} test image(s) were left out of the report: their content equals a train "
            "or val image (same file bytes), so they would measure memory, not search.",
        ]
    return lines


def _recipe_lines(search: dict) -> list[str]:
    """The settings the search chose, per study (``search``: stage -> StudyResult)."""
    if not search:
        return []
    lines = ["The recipe, chosen on val (every trial: results/recipe.md, plotted in results/recipe.png):", ""]
    for stage, result in search.items():
        from mcip.experiment.fit.search import _fmt

        settings = ", ".join(f"{k} {_fmt(v)}" for k, v in result.best_params.items())
        done = sum(t.state == "COMPLETE" for t in result.trials)
        pruned = sum(t.state == "PRUNED" for t in result.trials)
        lines.append(
            f"- {stage}: {settings} (val {result.metric} {result.best_value:.2f}; {done} trial(s) run to the "
            f"end, {pruned} pruned)"
        )
    return [*lines, ""]


def _recommendation(recommended, base_name, avgs, base, same) -> list[str]:
    rec = avgs[recommended]
    chosen = "on val" if not same else "on val (the same numbers as this table)"
    if recommended == base_name:
        best_i2i = max(avgs, key=lambda m: avgs[m].get("i2i") or float("-inf"))
        return [
            f"**Recommended model: {base_name}** (the starting model, chosen {chosen}): no fine-tuned row "
            f"improved image search while keeping zero-shot and text search within {GUARD_TEXT_SLACK} points "
            f"on val. If only image search matters, {best_i2i} has the best image search here "
            f"({_fmt(avgs[best_i2i].get('i2i'))}).",
        ]
    return [
        f"**Recommended model: {recommended}** (chosen {chosen}: the best val image search among the rows "
        f"whose val zero-shot and text search stay within {GUARD_TEXT_SLACK} points of the starting model). "
        f"Here: image search {_delta(rec.get('i2i'), base.get('i2i'))}, zero-shot "
        f"{_delta(rec.get('zeroshot'), base.get('zeroshot'))}, text search {_delta(rec.get('t2i'), base.get('t2i'))}.",
    ]


def serve_command(out: Path) -> str:
    return f"mcip serve --index {Path(out) / 'index'}"
