"""Options, the command-line spelling of benchmarks, and resolving a --benchmarks list."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcip.errors import ConfigError
from mcip.eval.benchmarks import TABLE1, create_benchmark, parse_benchmark_spec, resolve_benchmarks
from mcip.eval.benchmarks.options import split_benchmark_list


def test_parse_benchmark_spec():
    assert parse_benchmark_spec("gpr1200") == ("gpr1200", {})
    assert parse_benchmark_spec(" folder_knn:index=a, queries=b ") == (
        "folder_knn",
        {"index": "a", "queries": "b"},
    )
    assert parse_benchmark_spec("folder_i2i:path=C:/data/x") == ("folder_i2i", {"path": "C:/data/x"})
    assert parse_benchmark_spec("folder_i2i:") == ("folder_i2i", {})


@pytest.mark.parametrize(
    "bad", ["", ":path=x", "folder_i2i:path", "folder_i2i:=x", "folder_i2i:path=a,path=b"]
)
def test_parse_benchmark_spec_errors(bad):
    with pytest.raises(ConfigError):
        parse_benchmark_spec(bad)


def test_split_benchmark_list_keeps_options_with_their_benchmark():
    assert split_benchmark_list("gpr1200, folder_knn:index=a,queries=C:/b,cub") == [
        "gpr1200",
        "folder_knn:index=a,queries=C:/b",
        "cub",
    ]
    with pytest.raises(ConfigError, match="no benchmark before it"):
        split_benchmark_list("path=x,gpr1200")
    with pytest.raises(ConfigError, match="no benchmark before it"):
        split_benchmark_list("gpr1200,path=x")


def test_resolve_table1_mixed_and_deduplicated(tmp_path):
    assert [b.name for b in resolve_benchmarks("table1")] == list(TABLE1)
    found = resolve_benchmarks(["cub,table1", f"folder_i2i:path={tmp_path},include_self=false", "cub"])
    assert [b.name for b in found] == ["cub", *[n for n in TABLE1 if n != "cub"], "folder_i2i"]
    assert found[-1].options == {"path": tmp_path, "include_self": False}
    assert found[-1].spec == f"folder_i2i:include_self=false,path={tmp_path}"


def test_unknown_benchmark_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"Valid names: .*gpr1200"):
        resolve_benchmarks("gpr1200,gpr12000")


def test_options_are_typed_and_validated():
    assert create_benchmark("knn_in_val", index_per_class="50").options == {"index_per_class": 50, "seed": 0}
    assert create_benchmark("folder_i2i", path="rel", include_self="no").options == {
        "path": Path("rel").absolute(),
        "include_self": False,
    }
    with pytest.raises(ConfigError, match="has no option colour; valid options: index_per_class, seed"):
        create_benchmark("knn_in_val", colour="red")
    with pytest.raises(ConfigError, match="valid options: none"):
        create_benchmark("gpr1200", anything=1)
    with pytest.raises(ConfigError, match="include_self='maybe': expected true or false"):
        create_benchmark("folder_i2i", path="x", include_self="maybe")
    with pytest.raises(ConfigError, match="expected one of train, trainval"):
        create_benchmark("fgvc_aircraft", index_split="val")
    with pytest.raises(ConfigError, match="expected an integer, got 'five'"):
        create_benchmark("coco", captions_per_image="five")
    with pytest.raises(ConfigError, match="expected a positive integer, got 0"):
        create_benchmark("coco", captions_per_image=0)
