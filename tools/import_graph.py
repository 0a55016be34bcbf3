"""The import graph between mcip modules, and its cycles.

Usage::

    python tools/import_graph.py [SRC_DIR]          # cycles among module-level imports
    python tools/import_graph.py --all [SRC_DIR]    # ... and among function-level (lazy) imports too

An edge ``a -> b`` means module ``a`` imports module ``b`` (``from mcip.x import y`` points at
``mcip.x.y`` when that is a module, otherwise at ``mcip.x``). Imports under ``if TYPE_CHECKING:`` are
not edges. Function-level imports are edges only with ``--all``: they are lazy, so they cannot make an
import fail, but they still show an arrow pointing the wrong way. Exit status 1 when there is a cycle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path


def module_names(src: Path) -> dict[str, Path]:
    """Every module under ``src`` (the folder holding the ``mcip`` package), by dotted name."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """(import statement, whether it sits inside a function), skipping ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _imports(node, inner)


def _resolve(module: str, is_package: bool, node: ast.stmt, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [_deepest(alias.name, known) for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    out = []
    for alias in node.names:
        full = f"{base}.{alias.name}"
        out.append(full if full in known else _deepest(base, known))
    return out


def _deepest(name: str, known: dict[str, Path]) -> str:
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts)


def import_graph(src: Path, include_lazy: bool = False) -> dict[str, set[str]]:
    """``{module: {imported mcip module, ...}}`` for every module under ``src``."""
    known = module_names(src)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, lazy in _imports(tree):
            if lazy and not include_lazy:
                continue
            for target in _resolve(name, path.name == "__init__.py", node, known):
                if target and target != name:
                    graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest cycle through the first module of ``component`` (breadth first), as a path."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component


def cycles(src: Path, include_lazy: bool = False) -> list[list[str]]:
    """One example cycle per strongly connected component of the import graph."""
    graph = import_graph(src, include_lazy)
    return [shortest_cycle(graph, comp) for comp in strongly_connected(graph)]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    include_lazy = "--all" in args
    args = [a for a in args if a != "--all"]
    src = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "src"
    graph = import_graph(src, include_lazy)
    comps = strongly_connected(graph)
    kind = "module-level and function-level" if include_lazy else "module-level"
    print(f"{len(comps)} import cycle(s) among {kind} imports")
    for comp in comps:
        print(f"  [{len(comp)} modules] " + " -> ".join(shortest_cycle(graph, comp)))
    return 1 if comps else 0


if __name__ == "__main__":
    raise SystemExit(main())
