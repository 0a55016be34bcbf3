"""The import graph of mcip (``tools/import_graph.py``): no cycles, and the library never imports the apps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@pytest.fixture(scope="module")
def graph_tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_cli(module: str) -> bool:
    return "cli" in module.split(".")


APPS = ("mcip.experiment", "mcip.lab", "mcip.fit")
FACADES = ("mcip.fit", "mcip.lab.run", "mcip.lab.sweep")  # old import paths, kept for users
LAB_SOURCE = ("mcip.experiment", "mcip.experiment.lab", "mcip.experiment.sweep")  # the lab's side


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _is_app(module: str) -> bool:
    """The command line, the experiment (``mcip lab run``, ``mcip fit``) and the offline lab's data:
    applications built on the library."""
    return _is_cli(module) or _under(module, APPS)


def test_no_cycle_among_module_level_imports(graph_tool):
    assert graph_tool.cycles(SRC) == []


def test_no_cycle_in_the_library_counting_lazy_imports(graph_tool):
    """Function-level imports too (they only defer a cycle); the CLI's lazy command imports aside."""
    graph = graph_tool.import_graph(SRC, include_lazy=True)
    library = {m: {t for t in targets if not _is_cli(t)} for m, targets in graph.items() if not _is_cli(m)}
    comps = graph_tool.strongly_connected(library)
    assert [graph_tool.shortest_cycle(library, c) for c in comps] == []


def test_library_never_imports_the_applications(graph_tool):
    graph = graph_tool.import_graph(SRC, include_lazy=True)
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() if not _is_app(m) for t in ts if _is_app(t))
    assert upward == []


def test_tool_finds_a_cycle(graph_tool, tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
        "def f():\n    from pkg import a\nx = 1\n"
    )
    (pkg / "c.py").write_text("from . import b\n")
    assert graph_tool.cycles(tmp_path) == []
    assert graph_tool.cycles(tmp_path, include_lazy=True) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert graph_tool.import_graph(tmp_path)["pkg.c"] == {"pkg.b"}


def test_the_runner_does_not_know_the_lab(graph_tool):
    """``mcip.experiment`` is one runner with two data sources: the runner, the rows and the user's source
    never import the lab's source or the lab's data; the lab builds on the runner, never the reverse."""
    graph = graph_tool.import_graph(SRC, include_lazy=True)
    runner = {m: ts for m, ts in graph.items() if _under(m, ["mcip.experiment"]) and m not in LAB_SOURCE}
    edges = sorted(f"{m} -> {t}" for m, ts in runner.items() for t in ts)
    assert [e for e in edges if _under(e.split(" -> ")[1], ["mcip.lab", *LAB_SOURCE[1:]])] == []


def test_the_lab_data_never_imports_the_experiment(graph_tool):
    """``mcip.lab`` prepares the lab's data, below the experiment that reads it (its old modules ``run`` and
    ``sweep`` are facades of their new homes)."""
    graph = graph_tool.import_graph(SRC, include_lazy=True)
    lab = {m: ts for m, ts in graph.items() if _under(m, ["mcip.lab"]) and m not in FACADES}
    assert sorted(f"{m} -> {t}" for m, ts in lab.items() for t in ts if _under(t, ["mcip.experiment"])) == []


def test_nothing_in_mcip_imports_the_old_paths(graph_tool):
    """The facades (``mcip.fit``, ``mcip.lab.run``, ``mcip.lab.sweep``) are for users' old imports only."""
    graph = graph_tool.import_graph(SRC, include_lazy=True)
    old = sorted(
        f"{m} -> {t}" for m, ts in graph.items() if not _under(m, FACADES) for t in ts if _under(t, FACADES)
    )
    assert old == []
