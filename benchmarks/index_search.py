"""Search index speed and recall, as ratios measured in one run on one machine.

On n clustered unit vectors (default 200,000 x 512, float16 as the index stores them):

1. build time, single-query throughput and recall@10 (against exact search) of FAISS HNSW and IVF-PQ
   indexes (IVF-PQ also with exact re-ranking of the top k_factor_rf x k), next to exact Flat search;
2. mcip's query path (``SearchIndex.search_vector``: validation, normalisation, the backend layer and the
   hits with ids, paths and metadata) against calling FAISS's Python API directly on the same index
   object. Target: >= 0.95x.

Queries are fresh points of the same clusters, searched one at a time with one FAISS thread (as a server
does: concurrent requests, each single-threaded). Each query is timed on both paths, alternating which
goes first, so both see the same machine; q/s = 1 / median latency, the ratio is the ratio of medians.

    python benchmarks/index_search.py                          # n = 200,000, D = 512
    python benchmarks/index_search.py --n 1000000 --ivf IVF4096,PQ64 --nprobe 64

Ends with ``RESULT search_<index>_vs_faiss X target >=0.95`` per index.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from mcip.index import IndexRecord, SearchIndex, index_embeddings

TARGET = 0.95  # mcip's query path / FAISS direct (issue: single-query search overhead)


def cluster_centres(clusters: int, d: int, seed: int) -> np.ndarray:
    centres = np.random.default_rng(seed).standard_normal((clusters, d), dtype=np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def clustered_unit_vectors(n: int, centres: np.ndarray, seed: int, spread: float = 0.6) -> np.ndarray:
    """(n, D) float32 unit vectors, each a random centre plus Gaussian noise (generated in blocks)."""
    rng = np.random.default_rng(seed)
    d = centres.shape[1]
    out = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 65_536):
        m = min(65_536, n - lo)
        x = centres[rng.integers(0, len(centres), m)]
        x = x + spread / np.sqrt(d) * rng.standard_normal((m, d), dtype=np.float32)
        out[lo : lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top_k(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(database.shape[1])
    flat.add(database)
    return flat.search(queries, k)[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found top-k & true top-k| / k."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def compare_query_paths(index: SearchIndex, queries: np.ndarray, k: int, repeats: int) -> dict:
    """Median single-query latency of FAISS called directly on the backend's index object and of
    ``index.search_vector``, timed query by query in alternating order (so both see the same machine)."""
    raw = index._backend.index  # the very faiss.Index object mcip searches
    paths = [
        lambda q: raw.search(q[None], k),
        lambda q: index.search_vector(q, k),
    ]
    for q in queries[: max(1, len(queries) // 20)]:  # warm-up
        for fn in paths:
            fn(q)
    times: list[list[float]] = [[] for _ in paths]
    for i, q in enumerate(np.tile(queries, (repeats, 1))):
        for j in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            paths[j](q)
            times[j].append(time.perf_counter() - start)
    faiss_s, mcip_s = (statistics.median(t) for t in times)
    found = np.stack([raw.search(q[None], k)[1][0] for q in queries])
    return {
        "faiss_qps": 1 / faiss_s,
        "mcip_qps": 1 / mcip_s,
        "ratio": faiss_s / mcip_s,
        "found": found,
    }


def bench_factory(database, records, queries, truth, factory, folder: Path, params, args) -> dict:
    """Build ``factory`` through mcip (all threads), then time queries with ``args.query_threads``."""
    import faiss

    start = time.perf_counter()
    options = {"search_params": params} if params else {}
    index_embeddings(database, records, folder, factory=factory, **options)
    build = time.perf_counter() - start
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(args.query_threads)
    try:
        with SearchIndex.open(folder, load_model=False) as index:
            out = compare_query_paths(index, queries, 10, args.repeats)
            out["params"] = index._backend.search_params(index._backend.index)
    finally:
        faiss.omp_set_num_threads(threads)
    out.update(factory=factory, build_s=build, recall=recall_at_k(out.pop("found"), truth))
    return out


def markdown(results: list[dict], args) -> str:
    n, d, queries, flat_queries = args.n, args.d, args.queries, args.flat_queries
    repeats, threads = args.repeats, args.query_threads
    lines = [
        f"n = {n:,} clustered unit vectors, D = {d}, float16; {queries:,} single queries "
        f"({flat_queries:,} for Flat) x {repeats} on each path, k = 10, {threads} FAISS thread(s) per query; "
        f"{os.cpu_count()} CPU cores. q/s = 1 / median latency.",
        "",
        "| index | search params | build | recall@10 | FAISS direct | mcip search_vector | mcip / FAISS "
        "| mcip overhead |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['factory']} | {r['params'] or '-'} | {r['build_s']:.1f} s | {r['recall']:.3f} | "
            f"{r['faiss_qps']:,.0f} q/s | {r['mcip_qps']:,.0f} q/s | {r['ratio']:.2f}x | "
            f"{1e6 * (1 / r['mcip_qps'] - 1 / r['faiss_qps']):.0f} µs/query |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="database vectors")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--flat-queries", type=int, default=300, help="queries for exact Flat (slow per query)")
    p.add_argument("--hnsw", default="HNSW32")
    p.add_argument("--ef-search", type=int, help="HNSW efSearch (default: mcip's default)")
    p.add_argument("--ivf", default="IVF1024,PQ64")
    p.add_argument("--nprobe", type=int, help="IVF nprobe (default: mcip's default, sqrt(nlist))")
    p.add_argument(
        "--refine",
        type=int,
        default=16,
        help="also IVF-PQ + exact re-ranking of k_factor_rf x k candidates (0: off)",
    )
    p.add_argument("--repeats", type=int, default=3, help="times each query is timed on each path")
    p.add_argument(
        "--query-threads", type=int, default=1, help="FAISS threads while querying (as in a server)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    centres = cluster_centres(args.clusters, args.d, args.seed)
    database = clustered_unit_vectors(args.n, centres, args.seed + 1).astype(np.float16)
    queries = clustered_unit_vectors(args.queries, centres, args.seed + 2)
    truth = exact_top_k(database.astype(np.float32), queries, 10)
    records = [
        IndexRecord(f"v{i:07d}", Path(f"/data/v{i:07d}.jpg"), label=str(i % 10)) for i in range(args.n)
    ]
    plans = [
        ("Flat", None, args.flat_queries),
        (args.hnsw, f"efSearch={args.ef_search}" if args.ef_search else None, args.queries),
        (args.ivf, f"nprobe={args.nprobe}" if args.nprobe else None, args.queries),
    ]
    if args.refine:
        nprobe = f"nprobe={args.nprobe}," if args.nprobe else ""
        plans.append((f"{args.ivf},RFlat", f"{nprobe}k_factor_rf={args.refine}", args.queries))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (factory, params, nq) in enumerate(plans):
            data = (database, records, queries[:nq], truth[:nq])
            results.append(bench_factory(*data, factory, Path(tmp) / f"i{i}", params, args))
    table = markdown(results, args)
    print(json.dumps(results, indent=2) if args.json else table)
    for r in results:
        name = result_name(r["factory"])
        print(f"RESULT search_{name}_vs_faiss {r['ratio']:.3f} target >={TARGET}")
    return {"results": results, "table": table}


def result_name(factory: str) -> str:
    """``IVF1024,PQ64,RFlat`` -> ``ivf1024_pq64_rflat``."""
    return "_".join(part.lower() for part in factory.replace(",", " ").split())


if __name__ == "__main__":
    main()
