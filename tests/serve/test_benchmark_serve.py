"""``benchmarks/serve_latency.py`` runs (tiny index, a few requests) so it does not rot; numbers unchecked."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest


def load_benchmark():
    path = Path(__file__).parents[2] / "benchmarks" / "serve_latency.py"
    spec = importlib.util.spec_from_file_location("serve_latency", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("server", ["thread", pytest.param("process", marks=pytest.mark.slow)])
def test_serve_latency_benchmark_runs(index_dir, tmp_path, capsys, server):
    bench = load_benchmark()
    out = tmp_path / "results.json"
    argv = ["--index-dir", str(index_dir), "--requests", "6", "--concurrency", "1", "2", "--server", server]
    assert bench.main([*argv, "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert {(r["query"], r["path"], r["concurrency"]) for r in results} == {
        (q, p, c) for q in ("text", "id") for p in ("in-process", "HTTP") for c in (1, 2)
    }
    assert all(r["requests"] == 6 and r["qps"] > 0 for r in results)
    table = capsys.readouterr().out
    assert "| text | `GET /search` over HTTP | 2 | 6 |" in table


def test_synthetic_images_build_an_index(tiny_model_dir, tmp_path):
    bench = load_benchmark()
    bench.ensure_index(tmp_path / "index", 12, str(tiny_model_dir), batch_size=4)
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["count"] == 12
    assert len(list((tmp_path / "index-images").rglob("*.png"))) == 12
