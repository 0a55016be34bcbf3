"""The index benchmark runs (tiny n) so it does not rot; its numbers are not checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_index_search_benchmark_runs(capsys):
    path = Path(__file__).parent.parent.parent / "benchmarks" / "index_search.py"
    spec = importlib.util.spec_from_file_location("index_search", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--n", "3000", "--d", "32", "--clusters", "20", "--queries", "40", "--flat-queries", "20",
                      "--ivf", "IVF16,PQ8x4", "--repeats", "1"])  # fmt: skip
    assert [r["factory"] for r in out["results"]] == ["Flat", "HNSW32", "IVF16,PQ8x4", "IVF16,PQ8x4,RFlat"]
    assert out["results"][0]["recall"] == 1.0
    assert all(r["ratio"] > 0 for r in out["results"])
    printed = capsys.readouterr().out
    assert "| mcip / FAISS |" in printed and "RESULT search_hnsw32_vs_faiss " in printed
    assert "RESULT search_ivf16_pq8x4_rflat_vs_faiss " in printed


def test_index_search_breakdown_times_every_step(capsys):
    """``--breakdown``: each index gets the step-by-step table (FAISS, backend, normalisation, lazy hits,
    hits read), every step timed."""
    path = Path(__file__).parent.parent.parent / "benchmarks" / "index_search.py"
    spec = importlib.util.spec_from_file_location("index_search", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--n", "2000", "--d", "16", "--clusters", "10", "--queries", "20", "--flat-queries", "10",
                      "--ivf", "IVF8,PQ4x4", "--refine", "0", "--repeats", "1", "--breakdown"])  # fmt: skip
    for r in out["results"]:
        steps = r["breakdown_us"]
        assert len(steps) == 7 and all(us > 0 for us in steps.values())
    printed = capsys.readouterr().out
    assert "Where the time goes, HNSW32" in printed and "| search_vector (lazy hits) |" in printed
