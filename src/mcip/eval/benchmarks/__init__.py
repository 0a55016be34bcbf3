"""Benchmark adapters: one per dataset, in the ``BENCHMARKS`` registry.

``create_benchmark("gpr1200")`` / ``create_benchmark("folder_knn", index="a", queries="b")`` builds one;
``resolve_benchmarks("table1")`` or ``resolve_benchmarks("gpr1200,folder_i2i:path=DIR")`` reads the
command-line spelling (see :mod:`mcip.eval.benchmarks.options`). Every adapter reads its dataset under
the data root (``DATA_ROOT/<dataset folder>/...``, documented in its class docstring and in the
``DatasetMissingError`` it raises); the generic ones read the folders and files given as options instead:
folders of class sub-folders (``folder_i2i``, ``folder_knn``, ``classnames_zeroshot``) or a manifest
(``manifest_i2i``, ``manifest_knn``, ``manifest_zeroshot``, ``captions_t2i``).
"""

from __future__ import annotations

from collections.abc import Sequence

# Importing the adapter modules registers them.
from mcip.eval.benchmarks import (  # noqa: F401
    captions,
    classnames,
    cub,
    fgvc_aircraft,
    folder,
    gpr1200,
    instre,
    karpathy,
    knn_imagenet,
    lab,
    manifest,
    objectnet,
    revisited,
    zeroshot_imagenet,
)
from mcip.eval.benchmarks.base import (
    BENCHMARKS,
    Benchmark,
    BenchmarkData,
    CaptionSet,
    DatasetMissingError,
    Images,
    KNNSet,
    Option,
    RetrievalSet,
    RevisitedSet,
    ZeroShotSet,
)
from mcip.eval.benchmarks.options import parse_benchmark_spec, split_benchmark_list

TABLE1 = (
    "gpr1200",
    "instre",
    "cub",
    "roxford5k",
    "knn_in_val",
    "knn_in_sketch",
    "knn_in_a",
    "fgvc_aircraft",
    "zs_in_val",
    "zs_in_sketch",
    "zs_in_a",
    "zs_objectnet",
    "flickr30k",
    "coco",
)
"""The 14 benchmarks of the paper's Table 1, in its column order (I2I | k-NN | zero-shot | T2I)."""


def create_benchmark(name: str, **options: object) -> Benchmark:
    """The adapter registered as ``name``, with its options (strings as typed on a command line, or
    typed values); unknown names and bad options fail with ConfigError."""
    return BENCHMARKS.get(name)(options=dict(options))


def list_benchmarks() -> list[str]:
    """Every registered benchmark name, sorted."""
    return BENCHMARKS.names()


def resolve_benchmarks(specs: str | Sequence[str]) -> list[Benchmark]:
    """Benchmarks from ``"table1"``, ``"a,b,c"``, ``"folder_knn:index=A,queries=B"`` or a list of such
    strings (``table1`` may be mixed with other names); repeats are dropped, the order is kept."""
    pieces = [specs] if isinstance(specs, str) else list(specs)
    found: dict[str, Benchmark] = {}
    for text in (s for piece in pieces for s in split_benchmark_list(piece)):
        names = [(n, {}) for n in TABLE1] if text.lower() == "table1" else [parse_benchmark_spec(text)]
        for name, options in names:
            benchmark = create_benchmark(name, **options)
            found.setdefault(benchmark.spec, benchmark)
    return list(found.values())


__all__ = [
    "BENCHMARKS",
    "TABLE1",
    "Benchmark",
    "BenchmarkData",
    "CaptionSet",
    "DatasetMissingError",
    "Images",
    "KNNSet",
    "Option",
    "RetrievalSet",
    "RevisitedSet",
    "ZeroShotSet",
    "create_benchmark",
    "list_benchmarks",
    "parse_benchmark_spec",
    "resolve_benchmarks",
]
