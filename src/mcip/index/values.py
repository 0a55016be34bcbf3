"""The types of metadata values: typed once when records are stored, compared by type when filtered.

An index stores each record's extra fields as JSON, so a value is an integer, a float, a boolean, a string,
null, a list or an object. JSONL and Parquet manifests keep the types they hold. CSV cells are all text, so
each extra column of a CSV manifest gets one type, for every row:

- declared in its header as ``NAME:TYPE`` with TYPE one of ``int``, ``float``, ``bool``, ``str`` (the field is
  stored as NAME; a cell that does not read as TYPE is an error naming its row);
- or inferred from its non-empty cells: ``int`` when every one is an integer written plainly (``-12``,
  ``12345678901234567``; not ``012``, ``+1``, ``1.0`` or `` 1``), else ``float`` when every one is a decimal
  number (``4.50``, ``-1e3``; no leading zeros, spaces, ``nan`` or ``inf``), else ``bool`` when every one is
  ``true`` or ``false`` (any case), else ``str``.

An empty cell is the empty string in a ``str`` column and null (no value) in the others.

:func:`query_number` and :func:`query_bool` read the VALUE of a filter (``mcip.index.filters``) for
comparison with numbers and booleans.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from mcip.errors import InputError

_PLAIN_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_QUERY_INT = re.compile(r"[+-]?[0-9]+")
_QUERY_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOLS = {"true": True, "false": False}


def _plain_int(text: str) -> int | None:
    return int(text) if _PLAIN_INT.fullmatch(text) else None


def _plain_float(text: str) -> float | None:
    if not _PLAIN_FLOAT.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _bool(text: str) -> bool | None:
    return _BOOLS.get(text.lower())


CELL_TYPES: dict[str, Callable[[str], object]] = {
    "int": _plain_int,
    "float": _plain_float,
    "bool": _bool,
    "str": str,
}
INFERRED_ORDER = ("int", "float", "bool")  # the first that reads every non-empty cell; else str


def query_number(text: str) -> int | float | None:
    """A filter VALUE as a number: an ``int`` for an integer (``5``, ``+007``, exactly, however many digits),
    a ``float`` for a finite decimal (``4.5``, ``1e3``), else None (``nan``, ``inf``, ``1_000``, text)."""
    text = text.strip()
    if _QUERY_INT.fullmatch(text):
        return int(text)
    if _QUERY_FLOAT.fullmatch(text):
        value = float(text)
        return value if math.isfinite(value) else None
    return None


def query_bool(text: str) -> bool | None:
    """A filter VALUE as a boolean: ``true`` / ``false`` in any case, else None."""
    return _bool(text.strip())


def _declared(header: str) -> tuple[str, str | None]:
    """``price:float`` -> ``("price", "float")``; a header without a known ``:TYPE`` suffix is kept whole."""
    name, colon, kind = header.rpartition(":")
    if colon and name and kind in CELL_TYPES:
        return name, kind
    return header, None


def _infer(cells: list[str]) -> str:
    filled = [c for c in cells if c != ""]
    for kind in INFERRED_ORDER if filled else ():
        read = CELL_TYPES[kind]
        if all(read(c) is not None for c in filled):
            return kind
    return "str"


def _cell(text: str | None, kind: str, where: Callable[[], str]) -> object:
    if text is None:  # a short row: the column is missing
        return None
    if kind == "str":
        return text
    if text == "":
        return None
    value = CELL_TYPES[kind](text)
    if value is None:
        raise InputError(
            f"{where()}: {text[:40]!r} does not read as {kind}; fix the cell, or declare the column :str."
        )
    return value


def type_csv_columns(rows: list[dict], skip: set[str], path: object) -> list[dict]:
    """The rows of a CSV manifest with each column typed (module docstring): ``NAME:TYPE`` headers renamed to
    NAME and read as TYPE, the other columns (except those in ``skip``: id, path, label, captions) inferred."""
    headers = list(dict.fromkeys(key for row in rows for key in row if isinstance(key, str)))
    kinds: dict[str, tuple[str, str]] = {}  # header -> (name, type)
    for header in headers:
        name, kind = _declared(header)
        if name in skip:
            kind = "str"
        elif kind is None:
            kind = _infer([row.get(header) or "" for row in rows])
        kinds[header] = (name, kind)
    names = [name for name, _ in kinds.values()]
    if len(set(names)) < len(names):
        raise InputError(f"{path}: two columns have the same name once their :TYPE is dropped ({names}).")
    out = []
    for i, row in enumerate(rows):
        typed = {}
        for header, value in row.items():
            if header not in kinds:  # csv's key None: cells beyond the header
                typed[header] = value
                continue
            name, kind = kinds[header]
            typed[name] = _cell(value, kind, lambda i=i, name=name: f"{path}, row {i + 1}, column {name}")
        out.append(typed)
    return out
