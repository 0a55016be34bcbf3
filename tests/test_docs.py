"""README.md and docs/: every relative link and #anchor resolves, every generated number equals what
``tools/gen_docs.py`` makes from the committed result files (docs/results/*.json), and the README stays a
guide (short, no history, the set-up and test commands CI runs)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _gen_docs()


# ------------------------------------------------------------------------------------ links and anchors
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation removed (letters, digits,
    ``_``, ``-`` and spaces kept), each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _prose_lines(text: str):
    """Lines outside fenced code blocks, with inline code removed."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``path`` (a repeated slug gets ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Markdown link targets in ``path``'s prose (not in code)."""
    out = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)
        out += re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line)
    return out


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        (
            "The offline lab (`mcip lab prepare`, `mcip lab run`)",
            "the-offline-lab-mcip-lab-prepare-mcip-lab-run",
        ),
        ("Keep the text side: the lab's result", "keep-the-text-side-the-labs-result"),
        ("2. `mcip fit` on your own photos", "2-mcip-fit-on-your-own-photos"),
        ("MCIP+Re-A (guarded)", "mcipre-a-guarded"),
        ("`lab_i2i` and k-NN", "lab_i2i-and-k-nn"),
        ("Two  spaces", "two--spaces"),
        ("See [the lab](docs/lab.md)!", "see-the-lab"),
    ],
)
def test_slug_follows_githubs_rules(heading, expected):
    assert slug(heading) == expected


def test_repeated_headings_get_numbered_anchors(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Notes\n\n## Notes\n\n```\n# not a heading\n```\n\n### Notes ###\n")
    assert anchors(page) == {"notes", "notes-1", "notes-2"}


def test_links_skip_code_and_keep_titles(tmp_path):
    page = tmp_path / "p.md"
    page.write_text('[a](x.md#y) `[b](no.md)`\n```\n[c](no2.md)\n```\n[d](z.md "title") [e](https://e.org)\n')
    assert links(page) == ["x.md#y", "z.md", "https://e.org"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(
                f"{target}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} is missing"
            )
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.name}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


# ------------------------------------------------------------------------------------ the README is a guide
def test_readme_is_a_short_guide_without_history():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    history = re.findall(r"this release|previous release|this machine|earlier machine", text, re.I)
    assert history == []


def test_readme_holds_the_setup_and_test_commands_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == ".venv/bin/python -m pytest"
    assert "```bash\n.venv/bin/python -m pytest\n```" in readme
    setup = next(line for line in readme.splitlines() if line.startswith("python3.11 -m venv .venv"))
    for step in (
        "python3.11 -m venv .venv",
        ".venv/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1",
        '.venv/bin/pip install --quiet -e ".[dev]"',
    ):
        assert step in ci
        assert step.replace("--quiet ", "") in setup


# ------------------------------------------------------------------------------------ generated numbers
def test_docs_between_markers_equal_what_the_result_files_generate():
    stale = [file for file, (current, new) in gen.generate(ROOT).items() if current != new]
    assert stale == [], f"run `python tools/gen_docs.py` ({', '.join(stale)} out of date)"


def test_gen_docs_check_agrees(capsys):
    assert gen.main(["--check"]) == 0


def test_the_fit_placeholder_stands_only_while_its_file_is_absent():
    text = (ROOT / "docs" / "fit.md").read_text(encoding="utf-8")
    block = text.split("<!-- results:fit begin -->")[1].split("<!-- results:fit end -->")[0]
    absent = not (ROOT / "docs" / "results" / "fit_example.json").exists()
    assert (gen.PLACEHOLDER in block) == absent
    assert ("| baseline |" in block) == (not absent)


def test_the_lab_table_is_the_runs_own_table1():
    """An independent check of the generator: the table it writes equals the table the run printed."""
    path = ROOT / "docs" / "results" / "lab.json"
    if not path.exists():
        pytest.skip("no docs/results/lab.json committed yet")
    data = json.loads(path.read_text())
    printed = [line for line in data["table1_md"].splitlines() if line.startswith("|")]
    assert gen.full_table(data["results"]).splitlines() == printed


def _result(name: str, family: str, metric: str, value: float) -> dict:
    return {"benchmark": name, "family": family, "metrics": {metric: value}, "table1_metric": metric}


RESULTS = {
    "benchmarks": [
        {"name": "a_i2i", "family": "i2i", "table1_metric": "map"},
        {"name": "a_t2i", "family": "t2i", "table1_metric": "recall@5"},
        {"name": "a_zs", "family": "zeroshot", "table1_metric": "top1"},
    ],
    "models": [
        {
            "model": "baseline",
            "results": {
                "a_i2i": _result("a_i2i", "i2i", "map", 50.04),
                "a_t2i": _result("a_t2i", "t2i", "recall@5", 30.0),
                "a_zs": _result("a_zs", "zeroshot", "top1", 20.0),
            },
            "averages": {
                "i2i": {"value": 50.04, "present": 1, "columns": 1},
                "zeroshot": {"value": 20.0, "present": 1, "columns": 1},
                "t2i": {"value": 30.0, "present": 1, "columns": 1},
                "AVG": {"value": 33.35, "present": 3, "columns": 3},
            },
        },
        {
            "model": "tuned",
            "results": {
                "a_i2i": _result("a_i2i", "i2i", "map", 52.5),
                "a_t2i": _result("a_t2i", "t2i", "recall@5", float("nan")),
                "a_zs": _result("a_zs", "zeroshot", "top1", 19.0),
            },
            "averages": {
                "i2i": {"value": 52.5, "present": 1, "columns": 1},
                "zeroshot": {"value": 19.0, "present": 1, "columns": 1},
                "t2i": {"value": None, "present": 0, "columns": 1},
                "AVG": {"value": 35.75, "present": 2, "columns": 3},
            },
        },
    ],
}


def test_full_table_by_hand():
    assert gen.full_table(RESULTS).splitlines() == [
        "| model | a_i2i | a_zs | a_t2i | I2I avg | zero-shot avg | T2I avg | AVG |",
        "|---|---|---|---|---|---|---|---|",
        "| baseline | 50.0 | 20.0 | 30.0 | 50.0 | 20.0 | 30.0 | 33.4 |",
        "| tuned | 52.5 | 19.0 | n/a | 52.5 | 19.0 | n/a | 35.8 (2/3) |",
    ]


def test_delta_table_by_hand():
    assert gen.delta_table(RESULTS).splitlines() == [
        "| row | I2I | zero-shot | T2I | AVG |",
        "|---|---|---|---|---|",
        "| baseline | 50.0 | 20.0 | 30.0 | 33.4 |",
        "| tuned | 52.5 (+2.5) | 19.0 (-1.0) | n/a | 35.8 (+2.4) |",
    ]


@pytest.mark.parametrize(
    ("value", "target", "met"),
    [
        (0.95, ">=0.95", True),
        (0.94, ">=0.95", False),
        (1.5, "<=1.5", True),
        (2.45, "<=1.5", False),
        (1.0, ">1", False),
        (0.1, "<0.2", True),
        (3.0, "~3", None),
    ],
)
def test_target_met_by_hand(value, target, met):
    assert gen.target_met(value, target) is met


def test_parse_time_log_and_result_lines():
    log = (
        'noise\n\tCommand being timed: "mcip lab run"\n\tUser time (seconds): 1214.50\n'
        "\tSystem time (seconds): 11.80\n\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5\n"
        "\tMaximum resident set size (kbytes): 3984588\n"
    )
    assert gen.parse_time_log(log) == {
        "user_s": 1214.5,
        "system_s": 11.8,
        "wall_s": 3723.5,
        "max_rss_kb": 3984588.0,
    }
    assert gen.parse_time_log("\tElapsed (wall clock) time (h:mm:ss or m:ss): 11:06.20\n") == {
        "wall_s": 666.2
    }
    lines = ["x 1", "RESULT eval_map_vs_matmul 1.18 target <=1.5", "RESULT bad", "RESULT speedup 4.6"]
    assert gen.parse_result_lines(lines) == [
        {"name": "eval_map_vs_matmul", "value": 1.18, "target": "<=1.5"},
        {"name": "speedup", "value": 4.6, "target": None},
    ]


def test_replace_block_refuses_missing_or_repeated_markers():
    good = "a\n<!-- results:x begin -->\nold\n<!-- results:x end -->\nb"
    assert (
        gen.replace_block(good, "x", "new") == "a\n<!-- results:x begin -->\nnew\n<!-- results:x end -->\nb"
    )
    with pytest.raises(SystemExit, match="results:y"):
        gen.replace_block(good, "y", "new")
    with pytest.raises(SystemExit):
        gen.replace_block(good + good, "x", "new")
