"""A plain-words reading of a lab result: does each row show the paper's effect, in numbers?

The paper's claims, checked one by one against the baseline row (family averages of the table):
1. fine-tuning with class labels (GPR-FT, MCIP) improves image-to-image search (I2I) and k-NN;
2. GPR-FT alone hurts the text side (zero-shot, T2I): the embedding drifts away from the text tower;
3. Re-A (2SFT) brings the text side back without changing image embeddings;
4. MCIP keeps the text side better than GPR-FT, and MCIP+Re-A is the best all-round row.
Each claim is reported as seen or not seen, with the numbers; nothing here is tuned to agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcip.eval.report import averages, group_columns
from mcip.eval.runner import ModelReport

GUARDED = "MCIP+Re-A (guarded)"
# the guard's target on the test split: image search clearly up, text side kept (SPEC section 8)
GUARD_I2I_GAIN, GUARD_TEXT_SLACK = 2.0, 0.5
FAMILY_WORDS = {"i2i": "image search", "knn": "k-NN", "zeroshot": "zero-shot", "t2i": "text-to-image"}


def _avgs(report: ModelReport, columns: dict[str, list[str]]) -> dict[str, float | None]:
    return {family: value for family, (value, _, _) in averages(report, columns).items()}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _delta(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "n/a"
    return f"{value - base:+.1f}"


def _claim(seen: bool | None, text: str) -> str:
    mark = {True: "seen", False: "NOT seen", None: "not measurable"}[seen]
    return f"- {text}: **{mark}**"


def _gt(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a > b


def _guard_claims(guarded: dict, base: dict) -> list[str]:
    families = [f for f in ("i2i", "knn", "zeroshot", "t2i") if f in base]
    shown = ", ".join(f"{FAMILY_WORDS[f]} {_fmt(base.get(f))} -> {_fmt(guarded.get(f))}" for f in families)
    every = [_gt(guarded.get(f), base.get(f)) or guarded.get(f) == base.get(f) for f in families]
    measurable = all(guarded.get(f) is not None and base.get(f) is not None for f in families)
    lines = [
        _claim(
            all(every) if measurable else None,
            f"the guarded row is at least as good as the baseline in every family ({shown})",
        )
    ]
    i2i, zs, t2i = (guarded.get(f) for f in ("i2i", "zeroshot", "t2i"))
    b_i2i, b_zs, b_t2i = (base.get(f) for f in ("i2i", "zeroshot", "t2i"))
    target = None
    if None not in (i2i, zs, t2i, b_i2i, b_zs, b_t2i):
        target = (
            i2i >= b_i2i + GUARD_I2I_GAIN
            and zs >= b_zs - GUARD_TEXT_SLACK
            and t2i >= b_t2i - GUARD_TEXT_SLACK
        )
    lines.append(
        _claim(
            target,
            f"the guard's target: I2I >= baseline + {GUARD_I2I_GAIN} ({_delta(i2i, b_i2i)}), zero-shot and "
            f"T2I >= baseline - {GUARD_TEXT_SLACK} ({_delta(zs, b_zs)}, {_delta(t2i, b_t2i)}), so AVG above "
            f"the baseline ({_fmt(guarded.get('AVG'))} vs {_fmt(base.get('AVG'))})",
        )
    )
    return lines


def reading(
    reports: Sequence[ModelReport], benchmarks: Sequence[tuple[str, str]], quick: bool = False
) -> str:
    """Markdown: per-row changes against the first row (the baseline) and the paper's claims checked.

    ``benchmarks``: (name, family) of the table's columns; rows are matched by name (``GPR-FT``, ``2SFT``,
    ``MCIP``, ``MCIP+Re-A``); a claim whose rows are absent is "not measurable"."""
    if not reports:
        return "No results."
    columns = group_columns(benchmarks)
    rows = {r.model: _avgs(r, columns) for r in reports}
    for r in reports:  # an average over some of the columns is not comparable with the others
        if r.missing:
            rows[r.model]["AVG"] = None
    base_name = reports[0].model
    base = rows[base_name]
    lines = ["# Reading the lab result", ""]
    if quick:
        lines += [
            "This was a `--quick` run (a subset of the emoji, few training steps): it shows that every",
            "step works, not how large the effects are. Run without `--quick` for the numbers to read.",
            "",
        ]
    lines += [f"Changes against **{base_name}** (family averages, percentage points):", ""]
    header = ["row", *(FAMILY_WORDS.get(f, f) for f in columns if f != "AVG"), "AVG"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, avg in rows.items():
        cells = [
            _fmt(avg[f]) if name == base_name else f"{_fmt(avg[f])} ({_delta(avg[f], base[f])})"
            for f in [*(f for f in columns if f != "AVG"), "AVG"]
        ]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    get = rows.get
    gpr, sft, mc, mcr = get("GPR-FT", {}), get("2SFT", {}), get("MCIP", {}), get("MCIP+Re-A", {})
    text = ("zeroshot", "t2i")

    def text_avg(avg: dict) -> float | None:
        vals = [avg.get(f) for f in text if avg.get(f) is not None]
        return sum(vals) / len(vals) if vals else None

    lines += ["", "The paper's claims on this data:", ""]
    lines.append(
        _claim(
            _gt(gpr.get("i2i"), base.get("i2i")) and _gt(mc.get("i2i"), base.get("i2i")),
            f"fine-tuning improves image search (I2I {_fmt(base.get('i2i'))} -> GPR-FT {_fmt(gpr.get('i2i'))}, "
            f"MCIP {_fmt(mc.get('i2i'))})",
        )
    )
    lines.append(
        _claim(
            _gt(text_avg(base), text_avg(gpr)),
            f"GPR-FT alone costs text-side quality (zero-shot + T2I average {_fmt(text_avg(base))} -> "
            f"{_fmt(text_avg(gpr))})",
        )
    )
    lines.append(
        _claim(
            _gt(text_avg(sft), text_avg(gpr)),
            f"Re-A brings the text side back (GPR-FT {_fmt(text_avg(gpr))} -> 2SFT {_fmt(text_avg(sft))}); "
            f"image scores unchanged (I2I {_fmt(gpr.get('i2i'))} and {_fmt(sft.get('i2i'))})",
        )
    )
    lines.append(
        _claim(
            _gt(text_avg(mc), text_avg(gpr)),
            f"MCIP keeps the text side better than GPR-FT ({_fmt(text_avg(mc))} vs {_fmt(text_avg(gpr))})",
        )
    )
    paper = [n for n in rows if n != GUARDED]  # the paper's claim is about its own rows
    best = max(paper, key=lambda n: rows[n].get("AVG") or float("-inf"))
    lines.append(
        _claim(
            best == "MCIP+Re-A" if mcr else None,
            f"MCIP+Re-A has the best AVG of the paper's rows with every column (best: {best}, "
            f"{_fmt(rows[best].get('AVG'))})",
        )
    )
    tuned = [n for n in ("GPR-FT", "2SFT", "MCIP", "MCIP+Re-A") if rows.get(n, {}).get("AVG") is not None]
    if tuned:
        top = max(tuned, key=lambda n: rows[n]["AVG"])
        lines.append(
            _claim(
                top == "MCIP+Re-A" if mcr else None,
                f"MCIP+Re-A is the best fine-tuned row (best: {top}, {_fmt(rows[top]['AVG'])})",
            )
        )
    guarded = rows.get(GUARDED)
    if guarded is not None:
        lines += ["", "The alignment guard (not in the paper; every choice made on the val split):", ""]
        lines += _guard_claims(guarded, base)
    notes = [n for r in reports for n in r.notes]
    if notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in dict.fromkeys(notes))]
    return "\n".join(lines)
