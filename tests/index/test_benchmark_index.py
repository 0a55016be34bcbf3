"""benchmarks/index_search.py: its ratios on a fake clock (known per-call times), exact recall on a flat
index, and the RESULT lines with the targets their issues set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest


def _bench():
    path = Path(__file__).parent.parent.parent / "benchmarks" / "index_search.py"
    spec = importlib.util.spec_from_file_location("index_search", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


class _Clock:
    """A stand-in for the ``time`` module whose clock moves only when a fake call says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_query_path_ratios_on_known_times(monkeypatch):
    """FAISS takes 100 µs, search_vector 125 µs, reading its 10 hits 5 µs each: mcip / FAISS = 100 / 125 =
    0.8, with every hit read 100 / 175."""
    bench, clock = _bench(), _Clock()
    monkeypatch.setattr(bench, "time", clock)

    class Raw:
        def search(self, q, k):
            clock.now += 100e-6
            return np.zeros((1, k), np.float32), np.arange(k)[None]

    class Hits:
        def __iter__(self):
            for i in range(10):
                clock.now += 5e-6
                yield i

    class Index:
        _backend = type("B", (), {"index": Raw()})()

        def search_vector(self, q, k):
            clock.now += 125e-6
            return Hits()

    out = bench.compare_query_paths(Index(), np.ones((6, 4), np.float32), 10, repeats=2)
    assert out["ratio"] == pytest.approx(100 / 125)
    assert out["hits_ratio"] == pytest.approx(100 / 175)
    assert out["faiss_qps"] == pytest.approx(1e4) and out["mcip_read_qps"] == pytest.approx(1 / 175e-6)


def test_index_search_benchmark_runs(capsys):
    """A tiny run: exact search finds the true neighbours (recall 1.0 on Flat), and every index gets both
    RESULT lines with the fixed targets (0.95 for the query path, 0.9 with every hit read)."""
    bench = _bench()
    out = bench.main(["--n", "3000", "--d", "32", "--clusters", "20", "--queries", "40", "--flat-queries", "20",
                      "--ivf", "IVF16,PQ8x4", "--repeats", "1"])  # fmt: skip
    assert [r["factory"] for r in out["results"]] == ["Flat", "HNSW32", "IVF16,PQ8x4", "IVF16,PQ8x4,RFlat"]
    assert out["results"][0]["recall"] == 1.0
    printed = capsys.readouterr().out
    assert "| mcip / FAISS |" in printed
    for name in ("flat", "hnsw32", "ivf16_pq8x4", "ivf16_pq8x4_rflat"):
        assert f"RESULT search_{name}_vs_faiss " in printed
        line = next(x for x in printed.splitlines() if x.startswith(f"RESULT search_{name}_hits_vs_faiss "))
        assert line.endswith("target >=0.9")


def test_recall_at_k_counts_shared_neighbours():
    bench = _bench()
    found = np.array([[1, 2, 3], [4, 5, 6]])
    truth = np.array([[3, 2, 1], [4, 7, 8]])
    assert bench.recall_at_k(found, truth) == pytest.approx((3 / 3 + 1 / 3) / 2)


def test_index_search_breakdown_times_every_step(capsys):
    """``--breakdown``: each index gets the step-by-step table (FAISS, backend, normalisation, lazy hits,
    hits read) with all seven steps."""
    bench = _bench()
    out = bench.main(["--n", "2000", "--d", "16", "--clusters", "10", "--queries", "20", "--flat-queries", "10",
                      "--ivf", "IVF8,PQ4x4", "--refine", "0", "--repeats", "1", "--breakdown"])  # fmt: skip
    for r in out["results"]:
        assert len(r["breakdown_us"]) == 7
    printed = capsys.readouterr().out
    assert "Where the time goes, HNSW32" in printed and "| search_vector (lazy hits) |" in printed
