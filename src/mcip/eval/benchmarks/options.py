"""Benchmark options: typed parsers for :class:`~mcip.eval.benchmarks.base.Option`, and the
command-line spelling of a benchmark with options.

A benchmark is spelled ``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (``folder_knn:index=data/a,queries=data/b``);
a list of them is comma-separated (``gpr1200,folder_i2i:path=mine,cub``): a comma-separated piece that
holds ``=`` before any ``:`` continues the options of the benchmark before it. Values cannot contain commas.
Relative paths are resolved against the current directory when the benchmark is created.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcip.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"expected true or false, got {value!r}")


def integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise ValueError(f"expected an integer, got {value!r}")


def positive_int(value: Any) -> int:
    number = integer(value)
    if number < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number


def path(value: Any) -> Path:
    text = str(value).strip()
    if not text:
        raise ValueError("expected a path, got an empty string")
    return Path(text).expanduser().absolute()


def choice(*values: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in values:
            raise ValueError(f"expected one of {', '.join(values)}")
        return text

    return parse


def parse_benchmark_spec(text: str) -> tuple[str, dict[str, str]]:
    """``"folder_knn:index=a,queries=b"`` -> ``("folder_knn", {"index": "a", "queries": "b"})``."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not name or "=" in name:
        raise ConfigError(f"Cannot read the benchmark '{text}': expected NAME or NAME:KEY=VALUE,KEY=VALUE.")
    options: dict[str, str] = {}
    for piece in rest.split(",") if rest.strip() else []:
        key, eq, value = piece.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(
                f"Cannot read the option '{piece}' of benchmark '{name}': expected KEY=VALUE "
                f"(e.g. {name}:path=DIR)."
            )
        if key in options:
            raise ConfigError(f"Benchmark '{name}' is given the option '{key}' twice.")
        options[key] = value.strip()
    return name, options


def _continues_options(piece: str) -> bool:
    eq, colon = piece.find("="), piece.find(":")
    return eq >= 0 and (colon < 0 or eq < colon)


def split_benchmark_list(text: str) -> list[str]:
    """``"gpr1200,folder_knn:index=a,queries=b"`` -> ``["gpr1200", "folder_knn:index=a,queries=b"]``."""
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if _continues_options(piece):
            if not specs or ":" not in specs[-1]:
                raise ConfigError(
                    f"'{piece}' in '{text}' is an option with no benchmark before it; "
                    "write NAME:KEY=VALUE,KEY=VALUE (e.g. folder_i2i:path=DIR)."
                )
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs
