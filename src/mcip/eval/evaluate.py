"""``mcip.evaluate``: models x benchmarks -> the Table-1 report (results.json, table1.csv, table1.md and
the teaser plot), what ``mcip eval`` does, in one library call."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mcip.eval.benchmarks.base import Benchmark
from mcip.eval.runner import ModelReport
from mcip.models.precision import WeightPrecision

ModelSpec = str | os.PathLike


@dataclass
class Evaluation:
    """The reports (one per model), the columns ``(report key, family, Table-1 metric)`` in order, the
    files written (``json``, ``csv``, ``markdown``, and ``plot`` when one was drawn) and the Markdown table."""

    reports: list[ModelReport]
    columns: list[tuple[str, str, str]]
    files: dict[str, Path]
    table: str


def evaluate(
    models: Sequence[ModelSpec] | Mapping[str, ModelSpec],
    benchmarks: str | Sequence[Benchmark] = "table1",
    data_root: str | os.PathLike = ".",
    out: str | os.PathLike = "eval-results",
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    precision: WeightPrecision = "fp32",
    batch_size: int = 64,
    skip_missing: bool = False,
) -> Evaluation:
    """Evaluate every model on every benchmark and write the report into ``out``.

    ``models``: specs or mcip model directories; a mapping ``{row name: spec}`` names the report rows.
    ``benchmarks``: ``"table1"``, a comma-separated list of benchmark specs (``mcip.eval.benchmarks``), or
    ``Benchmark`` objects. Every dataset is checked under ``data_root`` before a model is loaded; absent
    ones raise ``DatasetMissingError`` with what to download, or, with ``skip_missing``, are reported n/a.
    Embeddings are cached in ``cache_dir`` (default ``$MCIP_CACHE_DIR`` or ``~/.cache/mcip/features``).
    """
    from mcip.eval.benchmarks import resolve_benchmarks
    from mcip.eval.report import markdown_table, write_report
    from mcip.eval.runner import benchmark_keys, evaluate_models

    if isinstance(benchmarks, str):
        benchmarks = resolve_benchmarks(benchmarks)
    specs = list(models.values()) if isinstance(models, Mapping) else list(models)
    reports = evaluate_models(
        specs,
        benchmarks,
        data_root,
        cache_dir=cache_dir,
        device=device,
        precision=precision,
        batch_size=batch_size,
        skip_missing=skip_missing,
    )
    if isinstance(models, Mapping):
        for name, report in zip(models, reports, strict=True):
            report.model = name
    keys = benchmark_keys(benchmarks)
    columns = [(k, b.family, b.table1_metric) for k, b in zip(keys, benchmarks, strict=True)]
    files = write_report(reports, columns, out)
    return Evaluation(reports, columns, files, markdown_table(reports, [(n, f) for n, f, _ in columns]))
