"""Metadata filters for search: ``--where "label=cereal" --where "price<5"``.

An expression is ``KEY OP VALUE`` with OP one of ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``; several
expressions must all hold (AND). KEY is a field of the indexed records: ``id``, ``path``, ``label`` or any
other column of the manifest the index was built from (kept as metadata, typed: ``mcip.index.values``).
VALUE is compared as the type of the stored value, row by row:

- a stored integer or float: VALUE must be a number (``5``, ``4.5``, ``1e3``); integers compare exactly,
  however many digits (``sku=12345678901234567`` does not match ...568), an integer and a float by value
  (``price=5`` matches a stored ``5.0``); VALUE ``abc`` matches no number;
- a stored boolean: VALUE must be ``true`` or ``false`` (any case); ``flag=1`` matches no boolean;
- a stored string: ``=`` / ``!=`` compare the text exactly (``label=1`` matches ``1``, not ``01``, ``1.0``
  or `` 1``; case counts); ``KEY=`` (empty VALUE) matches the empty string. ``<``, ``<=``, ``>``, ``>=``
  compare numbers only: a stored string counts when it is a number written plainly (indexes built before
  values were typed hold CSV cells as text);
- a list (``captions``) matches ``=`` when one of its items does, and ``!=`` when none does;
- ``!=`` matches exactly the rows that have the field and do not match ``=``; a row without the field (or
  with null) never matches, ``!=`` included: filter on what the records hold.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mcip.errors import InputError
from mcip.index.values import query_bool, query_number

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


@dataclass(frozen=True)
class Condition:
    """One ``KEY OP VALUE`` expression (see the module docstring)."""

    key: str
    op: str
    value: str
    number: int | float | None = field(init=False, repr=False, compare=False)
    boolean: bool | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "number", query_number(self.value))
        object.__setattr__(self, "boolean", query_bool(self.value))

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def matches(self, stored: Any) -> bool:
        """Whether a row whose field holds ``stored`` (None: no field) matches."""
        if stored is None:
            return False
        if self.op == "!=":
            return not self._equal_any(stored)
        if self.op == "=":
            return self._equal_any(stored)
        if isinstance(stored, list | tuple | dict):
            return False
        a = _ordered(stored)
        return a is not None and self.number is not None and OPERATORS[self.op](a, self.number)

    def _equal_any(self, stored: Any) -> bool:
        if isinstance(stored, list | tuple):
            return any(self._equal(item) for item in stored)
        return self._equal(stored)

    def _equal(self, stored: Any) -> bool:
        if isinstance(stored, bool):  # before int: bool is an int subclass
            return stored is self.boolean
        if isinstance(stored, int | float):
            return self.number is not None and stored == self.number  # int == int is exact
        if isinstance(stored, str):
            return stored == self.value
        return False  # null, objects


def _ordered(stored: Any) -> int | float | None:
    """A stored value as a number for ``<`` and friends: a number, or a string that is one written plainly."""
    if isinstance(stored, bool):
        return None
    if isinstance(stored, int):
        return stored
    if isinstance(stored, float):
        return stored if math.isfinite(stored) else None
    if isinstance(stored, str) and stored == stored.strip():
        return query_number(stored)
    return None


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
        if not found:
            raise InputError(
                f"Cannot read the filter {text!r}: write KEY OP VALUE with OP one of "
                f"{', '.join(OPERATORS)}, e.g. label=cereal or price<5."
            )
        key, op, value = found.groups()
        if op in ("<", "<=", ">", ">=") and query_number(value) is None:
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
