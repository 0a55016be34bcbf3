"""Search index speed and recall, as ratios measured in one run on one machine.

On n clustered unit vectors (default 200,000 x 512, float16 as the index stores them):

1. build time, single-query throughput and recall@10 (against exact search) of FAISS HNSW and IVF-PQ
   indexes (IVF-PQ also with exact re-ranking of the top k_factor_rf x k), next to exact Flat search;
2. mcip's query path (``SearchIndex.search_vector``: validation, normalisation, the backend layer and the
   hits, built when first read) against calling FAISS's Python API directly on the same index object.
   Target: >= 0.95x (issue 16). The same path with every hit read (ids, paths, metadata), as a server
   answering the query does, against the same FAISS call: target >= 0.90x (issue 7's target for the
   whole query path, restored by issue 29).

Queries are fresh points of the same clusters, searched one at a time with one FAISS thread (as a server
does: concurrent requests, each single-threaded). Each query is timed on both paths, alternating which
goes first, so both see the same machine; q/s = 1 / median latency, the ratio is the ratio of medians.

    python benchmarks/index_search.py                          # n = 200,000, D = 512
    python benchmarks/index_search.py --n 1000000 --ivf IVF4096,PQ64 --nprobe 64
    python benchmarks/index_search.py --breakdown    # also: where the time per query goes, step by step

Ends with ``RESULT search_<index>_vs_faiss X target >=0.95`` and ``RESULT search_<index>_hits_vs_faiss X
target >=0.9`` per index.
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

TARGET = 0.95  # mcip's query path / FAISS direct (issue 16: single-query search overhead)
HITS_TARGET = 0.90  # with every hit read / FAISS direct (issue 7: the whole query path; restored by issue 29)


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


def time_paths(paths: dict, queries: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds per query of each path, timed query by query with the order of the paths rotating
    from one query to the next (so every path sees the same machine, and follows each other path)."""
    names = list(paths)
    for q in queries[: max(1, len(queries) // 20)]:  # warm-up
        for fn in paths.values():
            fn(q)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, q in enumerate(np.tile(queries, (repeats, 1))):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            fn = paths[name]
            start = time.perf_counter()
            fn(q)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def compare_query_paths(index: SearchIndex, queries: np.ndarray, k: int, repeats: int) -> dict:
    """Median single-query latency of FAISS called directly on the backend's index object, of
    ``index.search_vector`` (hits built when read) and of ``search_vector`` with every hit read (iterated,
    as a server turning them into a response does)."""
    raw = index._backend.index  # the very faiss.Index object mcip searches
    medians = time_paths(
        {
            "faiss": lambda q: raw.search(q[None], k),
            "mcip": lambda q: index.search_vector(q, k),
            "mcip_read": lambda q: [hit for hit in index.search_vector(q, k)],
        },
        queries,
        repeats,
    )
    found = np.stack([raw.search(q[None], k)[1][0] for q in queries])
    return {
        "faiss_qps": 1 / medians["faiss"],
        "mcip_qps": 1 / medians["mcip"],
        "mcip_read_qps": 1 / medians["mcip_read"],
        "ratio": medians["faiss"] / medians["mcip"],
        "hits_ratio": medians["faiss"] / medians["mcip_read"],
        "found": found,
    }


def breakdown(index: SearchIndex, queries: np.ndarray, k: int, repeats: int) -> dict[str, float]:
    """Median µs per query of the query path built up step by step (``--breakdown``): where mcip's time
    over FAISS goes."""
    from mcip.index.query import unit_query
    from mcip.index.search import Hits

    raw, backend = index._backend.index, index._backend
    last = index.search_vector(queries[0], k)
    steps = {
        "FAISS search (Python API)": lambda q: raw.search(q[None], k),
        "backend.search (C entry point)": lambda q: backend.search(q[None], k),
        "+ normalise the query": lambda q: backend.search(unit_query(q)[None], k),
        "search_vector (lazy hits)": lambda q: index.search_vector(q, k),
        "search_vector + iterate the hits": lambda q: [hit for hit in index.search_vector(q, k)],
        "search_vector + list(hits)": lambda q: list(index.search_vector(q, k)),
        "iterate one query's hits alone": lambda q: [hit for hit in Hits(*last._parts())],
    }
    return {name: 1e6 * t for name, t in time_paths(steps, queries, repeats).items()}


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
            if args.breakdown:
                out["breakdown_us"] = breakdown(index, queries, 10, args.repeats)
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
        "| mcip overhead | with every hit read |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['factory']} | {r['params'] or '-'} | {r['build_s']:.1f} s | {r['recall']:.3f} | "
            f"{r['faiss_qps']:,.0f} q/s | {r['mcip_qps']:,.0f} q/s | {r['ratio']:.2f}x | "
            f"{1e6 * (1 / r['mcip_qps'] - 1 / r['faiss_qps']):.0f} µs/query | "
            f"{r['mcip_read_qps']:,.0f} q/s ({r['mcip_read_qps'] / r['faiss_qps']:.2f}x) |"
        )
    for r in results:
        if "breakdown_us" in r:
            lines += [
                "",
                f"Where the time goes, {r['factory']} (median µs per query):",
                "",
                "| path | µs |",
                "|---|---|",
            ]
            lines += [f"| {step} | {us:.1f} |" for step, us in r["breakdown_us"].items()]
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
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the query path step by step (FAISS, backend, normalisation, hits) per index",
    )
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
        print(f"RESULT search_{name}_hits_vs_faiss {r['hits_ratio']:.3f} target >={HITS_TARGET}")
    return {"results": results, "table": table}


def result_name(factory: str) -> str:
    """``IVF1024,PQ64,RFlat`` -> ``ivf1024_pq64_rflat``."""
    return "_".join(part.lower() for part in factory.replace(",", " ").split())


if __name__ == "__main__":
    main()
