"""Metadata filters for search: ``--where "label=cereal" --where "price<5"``.

An expression is ``KEY OP VALUE`` with OP one of ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``; several
expressions must all hold (AND). KEY is a field of the indexed records: ``id``, ``path``, ``label`` or any
other column of the manifest the index was built from (kept as metadata). Semantics, row by row:

- ``=`` / ``!=``: equal / not equal as text (``label=cereal``); when both the stored value and VALUE are
  numbers, as numbers (``price=5`` matches a stored ``5.0``). A list (``captions``) matches ``=`` when one
  of its items is equal, and ``!=`` when none is.
- ``<``, ``<=``, ``>``, ``>=``: numbers only (a stored text that reads as a number counts as one); a row
  whose value is not a number never matches.
- A row without the field never matches (``!=`` included): filter on what the records hold.

The filter is evaluated on mcip's own records (the source of truth of every backend), once per
expression set (cached), giving the matching rows; the backend then ranks only those rows: FAISS through
an ``IDSelector`` in its search parameters (exact for ``Flat``; IVF and HNSW search the selected vectors
among the lists / graph nodes they visit, so a very selective filter can return fewer than k hits: raise
``nprobe`` / ``efSearch``), Qdrant through a ``has_id`` filter (its filtered HNSW search).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mcip.errors import InputError

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
    "=": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$", re.S)
MAX_EXPRESSION_CHARS = 1000
MAX_EXPRESSIONS = 16


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


@dataclass(frozen=True)
class Condition:
    """One ``KEY OP VALUE`` expression (see the module docstring)."""

    key: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def matches(self, stored: Any) -> bool:
        if stored is None:
            return False
        if isinstance(stored, list | tuple):
            if self.op == "=":
                return any(self._scalar(item) for item in stored)
            if self.op == "!=":
                return not any(Condition(self.key, "=", self.value)._scalar(item) for item in stored)
            return False
        return self._scalar(stored)

    def _scalar(self, stored: Any) -> bool:
        compare = OPERATORS[self.op]
        a, b = _number(stored), _number(self.value)
        if self.op in ("=", "!="):
            if a is not None and b is not None:
                return compare(a, b)
            return compare(str(stored), self.value)
        return a is not None and b is not None and compare(a, b)


def parse_where(expressions: str | Sequence[str | Condition] | None) -> tuple[Condition, ...]:
    """``["label=cereal", "price<5"]`` (or one string; parsed conditions pass through) -> conditions; a
    malformed one raises InputError saying what an expression looks like."""
    if expressions is None:
        return ()
    if isinstance(expressions, str):
        expressions = [expressions]
    if len(expressions) > MAX_EXPRESSIONS:
        raise InputError(f"At most {MAX_EXPRESSIONS} where-expressions per query, got {len(expressions)}.")
    out = []
    for text in expressions:
        if isinstance(text, Condition):  # already parsed
            out.append(text)
            continue
        if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
            raise InputError(f"A where-expression is a text of at most {MAX_EXPRESSION_CHARS} characters.")
        found = _EXPRESSION.match(text)
        if not found or not found.group(3):
            raise InputError(
                f"Cannot read the filter {text!r}: write KEY OP VALUE with OP one of "
                f"{', '.join(OPERATORS)}, e.g. label=cereal or price<5."
            )
        key, op, value = found.groups()
        if op in ("<", "<=", ">", ">=") and _number(value) is None:
            raise InputError(f"The filter {text!r} compares with {op}, which needs a number after it.")
        out.append(Condition(key, op, value))
    return tuple(out)


def matching_rows(
    conditions: Sequence[Condition], column: Callable[[str], Sequence[Any]], n: int
) -> np.ndarray:
    """The sorted int64 rows (of ``n``) where every condition holds; ``column(key)`` gives a field's value
    per row (None where a row lacks it)."""
    keep = np.ones(n, dtype=bool)
    for condition in conditions:
        values = column(condition.key)
        keep &= np.fromiter((condition.matches(v) for v in values), dtype=bool, count=n)
    return np.flatnonzero(keep).astype(np.int64)
