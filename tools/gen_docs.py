"""Write the numbers in README.md and docs/ from the committed result files in docs/results/.

Every measured number in the docs sits between marker comments and is generated here from a file that a
run wrote, so a number in the docs is always one that a run printed:

    <!-- results:NAME begin -->
    ...generated...
    <!-- results:NAME end -->

    python tools/gen_docs.py            # rewrite the blocks
    python tools/gen_docs.py --check    # exit 1 when a block differs from what the files give

Result files (``docs/results/*.json``) hold what a run wrote plus ``machine``, ``command``, ``date`` and
``note``; ``record`` writes one:

    python tools/gen_docs.py record lab --results /tmp/lab1/results --time-log /tmp/labrun.log \\
        --command "mcip lab run --out /tmp/lab1" --out docs/results/lab.json
    python tools/gen_docs.py record fit --results fit-results/results --command "mcip fit ..." \\
        --out docs/results/fit_example.json
    python tools/gen_docs.py record bench --log eval_map.log --command "python benchmarks/eval_map.py" \\
        --note "..." --out docs/results/speed_eval_map.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "docs/results"
FAMILIES = (("i2i", "I2I"), ("knn", "k-NN"), ("zeroshot", "zero-shot"), ("t2i", "T2I"))
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
PLACEHOLDER = "The fit example's results are not yet generated"


# ---------------------------------------------------------------------------------------------- tables
def fmt_value(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def fmt_average(avg: dict) -> str:
    """``{"value", "present", "columns"}`` as ``mcip.eval.report`` prints it: ``61.2`` or ``61.2 (3/4)``."""
    if avg.get("value") is None or math.isnan(avg["value"]):
        return "n/a"
    text = f"{avg['value']:.1f}"
    return text if avg["present"] == avg["columns"] else f"{text} ({avg['present']}/{avg['columns']})"


def column_families(results: dict) -> list[tuple[str, list[str]]]:
    """(family, benchmark names) in Table 1 family order, as the run's benchmarks list them."""
    order = [f for f, _ in FAMILIES]
    groups: dict[str, list[str]] = {}
    for b in results["benchmarks"]:
        groups.setdefault(b["family"], []).append(b["name"])
    return sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def table_value(model: dict, name: str) -> float | None:
    result = model["results"].get(name)
    if not result:
        return None
    value = result["metrics"].get(result["table1_metric"])
    return None if value is None or math.isnan(value) else value


def full_table(results: dict) -> str:
    """The run's ``table1.md`` table: every column, the family averages and AVG, one row per model."""
    families = column_families(results)
    titles = dict(FAMILIES)
    names = [n for _, ns in families for n in ns]
    header = ["model", *names, *(f"{titles.get(f, f)} avg" for f, _ in families), "AVG"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in results["models"]:
        cells = [fmt_value(table_value(m, n)) for n in names]
        cells += [fmt_average(m["averages"][f]) for f, _ in families] + [fmt_average(m["averages"]["AVG"])]
        lines.append("| " + " | ".join([m["model"], *cells]) + " |")
    return "\n".join(lines)


def delta_table(results: dict) -> str:
    """Family averages and AVG of every row with its change against the first row (the baseline)."""
    families = [f for f, _ in column_families(results)] + ["AVG"]
    titles = {**dict(FAMILIES), "AVG": "AVG"}
    models = results["models"]
    base = {f: models[0]["averages"][f]["value"] for f in families}
    lines = ["| row | " + " | ".join(titles.get(f, f) for f in families) + " |"]
    lines.append("|" + "---|" * (len(families) + 1))
    for i, m in enumerate(models):
        cells = []
        for f in families:
            value = m["averages"][f]["value"]
            shown = fmt_value(value)
            if i and value is not None and base[f] is not None:
                shown += f" ({value - base[f]:+.1f})"
            cells.append(shown)
        lines.append("| " + " | ".join([m["model"], *cells]) + " |")
    return "\n".join(lines)


def machine_line(data: dict) -> str:
    m = data.get("machine") or {}
    flags = m.get("flags", {})
    shown = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
    return f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores ({shown})"


def provenance(data: dict, name: str) -> str:
    text = f"From `docs/results/{name}`: `{data['command']}`, {data['date']}, on {machine_line(data)}."
    return text + (f" {data['note']}" if data.get("note") else "")


def timing_line(data: dict) -> str:
    t = data.get("time") or {}
    parts = []
    if "wall_s" in t:
        parts.append(f"wall time {t['wall_s'] / 60:.1f} min")
    if "user_s" in t and "system_s" in t:
        parts.append(f"user {t['user_s']:.0f} s, system {t['system_s']:.0f} s")
    if "max_rss_kb" in t:
        parts.append(f"peak RSS {t['max_rss_kb'] / 2**20:.1f} GiB")
    steps = (data.get("run") or {}).get("steps_seconds") or {}
    if steps:
        parts.append("steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items()))
    return ("Time (`/usr/bin/time -v` and `run.json`): " + "; ".join(parts) + ".") if parts else ""


# ---------------------------------------------------------------------------------------------- blocks
def lab_full(data: dict | None) -> str:
    if data is None:
        return "The lab's results are not yet generated (`docs/results/lab.json` is absent)."
    res = data["results"]
    out = [full_table(res), "", "Family averages against the baseline (percentage points):", ""]
    out += [delta_table(res), "", provenance(data, "lab.json")]
    if data.get("data_summary"):
        out += ["", f"Data (as the run printed it): {data['data_summary']}."]
    if timing := timing_line(data):
        out += ["", timing]
    if recommended := (data.get("run") or {}).get("recommended"):
        out += ["", f"Indexed for the search demo: {recommended}."]
    return "\n".join(out)


def lab_summary(data: dict | None) -> str:
    if data is None:
        return "The lab's results are not yet generated (`docs/results/lab.json` is absent)."
    table = delta_table(data["results"])
    return f"{table}\n\n{provenance(data, 'lab.json')}"


def fit_block(data: dict | None) -> str:
    if data is None:
        return (
            f"{PLACEHOLDER}: `docs/results/fit_example.json` does not exist yet. It is written from a run "
            "of the example above with `python tools/gen_docs.py record fit`."
        )
    out = ["On the test photos (read once, after every choice):", "", full_table(data["results"])]
    if data.get("val_results"):
        out += ["", "On the val photos (which chose the recipe and the recommended row):", ""]
        out += [full_table(data["val_results"])]
    if recommended := (data.get("run") or {}).get("recommended"):
        out += ["", f"Recommended model (chosen on val): {recommended}."]
    if data.get("recipe_md"):  # the search's trial table, its headings one level down
        recipe = data["recipe_md"].strip().splitlines()[1:]
        out += ["", "The recipe search's trials:", *(("#" + x) if x.startswith("## ") else x for x in recipe)]
    out += ["", provenance(data, "fit_example.json")]
    if timing := timing_line(data):
        out += ["", timing]
    return "\n".join(out)


def target_met(value: float, target: str) -> bool | None:
    """Whether ``value`` meets a RESULT line's target (``>=0.95``, ``<=1.5``, ``<0.1``, ``>1``)."""
    match = re.fullmatch(r"(>=|<=|>|<)(-?[0-9.]+)", target.strip())
    if not match:
        return None
    op, bound = match.group(1), float(match.group(2))
    return {">=": value >= bound, "<=": value <= bound, ">": value > bound, "<": value < bound}[op]


def speed_block(files: dict[str, dict]) -> str:
    if not files:
        return "No benchmark results are committed yet (`docs/results/speed_*.json`)."
    out = ["| benchmark | result | value | target | met |", "|---|---|---|---|---|"]
    for data in files.values():
        for r in data["results"]:
            if r["target"] is None:
                target, met = "none", "-"
            else:
                target = r["target"]
                met = {True: "yes", False: "**no**", None: "?"}[target_met(r["value"], target)]
            out.append(f"| `{data['command']}` | `{r['name']}` | {r['value']:g} | {target} | {met} |")
    for name, data in files.items():
        out += ["", f"`{data['command']}` printed:", "", "```", *data["output"], "```", ""]
        out.append(provenance(data, name))
    return "\n".join(out)


def load(root: Path, name: str) -> dict | None:
    path = root / RESULTS / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def blocks(root: Path) -> dict[tuple[str, str], str]:
    """(file, block name) -> generated text."""
    lab = load(root, "lab.json")
    speed = {p.name: json.loads(p.read_text()) for p in sorted((root / RESULTS).glob("speed_*.json"))}
    return {
        ("README.md", "lab-summary"): lab_summary(lab),
        ("docs/lab.md", "lab"): lab_full(lab),
        ("docs/fit.md", "fit"): fit_block(load(root, "fit_example.json")),
        ("docs/speed.md", "speed"): speed_block(speed),
    }


def replace_block(text: str, name: str, content: str) -> str:
    begin, end = f"<!-- results:{name} begin -->", f"<!-- results:{name} end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"gen_docs: expected one '{begin}' ... '{end}' pair")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{content}\n{end}{tail}"


def generate(root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """file -> (current text, generated text)."""
    out: dict[str, tuple[str, str]] = {}
    for (file, name), content in blocks(root).items():
        current, new = out.get(file, ((root / file).read_text(encoding="utf-8"),) * 2)
        out[file] = (current, replace_block(new, name, content))
    return out


# ---------------------------------------------------------------------------------------------- record
def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", info, re.M) or re.search("()", "")).group(1).split())
    return {
        "cpu": model.group(1).strip() if model else "unknown",
        "cores": os.cpu_count(),
        "flags": {f: f in flags for f in CPU_FLAGS},
    }


TIME_KEYS = {
    "Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall_s",
    "User time (seconds)": "user_s",
    "System time (seconds)": "system_s",
    "Maximum resident set size (kbytes)": "max_rss_kb",
    "Minor (reclaiming a frame) page faults": "minor_faults",
}


def parse_time_log(text: str) -> dict:
    """The last ``/usr/bin/time -v`` report in ``text`` (wall time in seconds)."""
    out: dict = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key in TIME_KEYS:
            if key.startswith("Elapsed"):
                parts = [float(p) for p in value.split(":")]
                out["wall_s"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
            else:
                out[TIME_KEYS[key]] = float(value)
    return out


def parse_result_lines(lines: list[str]) -> list[dict]:
    """``RESULT <name> <value> [target <op><number>]`` lines (a line without a target is a figure to
    report: its target is None)."""
    out = []
    for line in lines:
        m = re.fullmatch(r"RESULT (\S+) (\S+)(?: target (\S+))?", line.strip())
        if m:
            out.append({"name": m.group(1), "value": float(m.group(2)), "target": m.group(3)})
    return out


def record(args: argparse.Namespace) -> int:
    data: dict = {"command": args.command, "date": args.date, "machine": machine(), "note": args.note}
    if args.kind in ("lab", "fit"):
        results = Path(args.results)
        data["results"] = json.loads((results / "results.json").read_text())
        data["run"] = json.loads((results / "run.json").read_text())
        data["table1_md"] = (results / "table1.md").read_text()
        if (results / "val" / "results.json").is_file():  # what chose the recommended row
            data["val_results"] = json.loads((results / "val" / "results.json").read_text())
        if (results / "recipe.md").is_file():  # mcip fit's recipe search
            data["recipe_md"] = (results / "recipe.md").read_text()
    else:
        lines = Path(args.log).read_text().splitlines()
        data["output"] = [line for line in lines if line.strip()]
        data["results"] = parse_result_lines(lines)
    if args.time_log:
        log = Path(args.time_log).read_text(errors="replace")
        data["time"] = parse_time_log(log)
        summary = re.search(r"^\s*(train \d+ images.*)$", log, re.M)  # the run's "[1/N] data" line
        if summary:
            data["data_summary"] = summary.group(1).strip()
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["record"]:
        p = argparse.ArgumentParser(prog="gen_docs.py record")
        p.add_argument("kind", choices=["lab", "fit", "bench"])
        p.add_argument("--results", help="a run's results folder (lab, fit)")
        p.add_argument("--log", help="a benchmark's output (bench)")
        p.add_argument("--time-log", help="output holding a /usr/bin/time -v report")
        p.add_argument("--command", required=True)
        p.add_argument("--note", default="")
        p.add_argument("--date", default=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"))
        p.add_argument("--out", required=True)
        return record(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 when the docs differ from the result files")
    args = p.parse_args(argv)
    stale = []
    for file, (current, new) in generate().items():
        if current != new:
            stale.append(file)
            if not args.check:
                (ROOT / file).write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python tools/gen_docs.py)", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale and not args.check else "docs match docs/results")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
