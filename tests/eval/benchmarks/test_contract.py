"""Contract tests over every registry entry, and the Table 1 list."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from mcip.eval.benchmarks import (
    BENCHMARKS,
    TABLE1,
    CaptionSet,
    DatasetMissingError,
    KNNSet,
    RetrievalSet,
    RevisitedSet,
    ZeroShotSet,
    create_benchmark,
    list_benchmarks,
    parse_benchmark_spec,
)
from mcip.eval.benchmarks.base import Family
from tests.eval.benchmarks.synth import BUILDERS, absent_options

FAMILY_TYPES = {
    "i2i": (RetrievalSet, RevisitedSet),
    "knn": (KNNSet,),
    "zeroshot": (ZeroShotSet,),
    "t2i": (CaptionSet,),
}
NAMES = list_benchmarks()


def _image_sets(data):
    if isinstance(data, RevisitedSet):
        return [data.database, data.queries]
    if isinstance(data, KNNSet):
        return [data.index, data.queries]
    return [data.images]


def test_every_benchmark_has_a_synthetic_layout():
    assert set(NAMES) == set(BUILDERS)


@pytest.mark.parametrize("name", NAMES)
def test_class_attributes(name):
    cls = BENCHMARKS.get(name)
    assert cls.name == name
    assert cls.family in typing.get_args(Family)
    assert isinstance(cls.table1_metric, str) and cls.table1_metric
    assert cls.download.strip()


@pytest.mark.parametrize("name", NAMES)
def test_missing_data_fails_in_check_and_load_naming_the_path(name, tmp_path):
    benchmark = create_benchmark(name, **absent_options(name, tmp_path))
    for step in (benchmark.check, benchmark.load):
        with pytest.raises(DatasetMissingError) as info:
            step(tmp_path)
        assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_loads_its_synthetic_layout(name, tmp_path):
    options = BUILDERS[name](tmp_path)
    benchmark = create_benchmark(name, **options)
    benchmark.check(tmp_path)
    data = benchmark.load(tmp_path)
    assert isinstance(data, FAMILY_TYPES[benchmark.family])
    for images in _image_sets(data):
        assert images.paths and all(p.is_file() for p in images.paths)
        if images.labels is not None:
            assert images.labels.dtype == np.int64 and images.labels.shape == (len(images.paths),)
    again = benchmark.load(tmp_path)  # deterministic
    for a, b in zip(_image_sets(data), _image_sets(again), strict=True):
        assert a.paths == b.paths
        assert (a.labels is None and b.labels is None) or np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("name", NAMES)
def test_spec_round_trips(name, tmp_path):
    benchmark = create_benchmark(name, **BUILDERS[name](tmp_path))
    parsed_name, options = parse_benchmark_spec(benchmark.spec)
    again = create_benchmark(parsed_name, **options)
    assert again.spec == benchmark.spec and again.options == benchmark.options


def test_table1_is_the_papers_column_order():
    assert len(TABLE1) == 14 and len(set(TABLE1)) == 14
    families = [BENCHMARKS.get(n).family for n in TABLE1]
    assert families == ["i2i"] * 4 + ["knn"] * 4 + ["zeroshot"] * 4 + ["t2i"] * 2
    metrics = [BENCHMARKS.get(n).table1_metric for n in TABLE1]
    assert metrics == ["map", "map", "recall@1", "medium_map"] + ["top1"] * 8 + ["recall@5"] * 2
