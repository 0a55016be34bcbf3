"""``/search`` latency and throughput over HTTP against calling ``SearchIndex`` in-process, in one run.

The server is ``mcip serve`` in its own process (uvicorn, loopback); the load is a closed loop: each of
``--concurrency`` client threads sends its next query when the previous one has been answered (and its
JSON parsed). The baseline runs the same queries through ``SearchIndex.search`` / ``search_by_id`` in
this process with the same number of threads, so ``HTTP / in-process`` is the cost of the API
(HTTP, JSON, the thread pool and the client) on top of the model and the vector search. Both paths
first answer every query once (warm-up), then run in interleaved blocks (``--rounds``), so a change in
the machine's background load hits both alike. The server's own ``took_ms`` (time inside the index)
separates the API's cost from the model's.

Queries: text (distinct phrases: every one runs the text tower) and id (an indexed image's stored
embedding: no model call, the vector search and the API only). Index: ``--n`` synthetic images (coloured
shapes) encoded with ``--model`` into ``--index-dir`` once, reused by later runs.

    python benchmarks/serve_latency.py                                  # 2,000 images, composed:lab
    python benchmarks/serve_latency.py --index-dir runs/lab/index       # any existing index

Ends with, per query kind and concurrency, ``RESULT serve_<query>_c<N>_p50_ms``, ``..._p99_ms`` and
``..._http_vs_inprocess_qps`` (HTTP queries/s over in-process): figures without a target (issue 7 asked
for the latencies, not a bound; its query-path target, >= 0.9x of FAISS, is ``index_search.py``'s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

from mcip.index import SearchIndex, build_index

COLOURS = ["red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "brown", "grey"]
RGB = {
    "red": (220, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (230, 210, 40),
    "green": (40, 170, 60),
    "teal": (30, 160, 160),
    "blue": (40, 70, 220),
    "purple": (130, 50, 180),
    "pink": (240, 120, 170),
    "brown": (120, 80, 40),
    "grey": (128, 128, 128),
}
SHAPES = ["circle", "square", "triangle", "star", "heart", "face", "cat", "car", "tree", "house"]


@dataclass
class Load:
    """One configuration's result: latencies in milliseconds, throughput in queries per second."""

    query: str
    path: str
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    qps: float
    took_ms: float | None = None  # p50 of the server's own took_ms (time inside the index), HTTP only


def synthetic_images(root: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    """``n`` PNGs in ``root/<colour>/``: a coloured background with a random darker polygon."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for i in range(n):
        colour = COLOURS[i % len(COLOURS)]
        folder = root / colour
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (size, size), RGB[colour])
        points = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(int(rng.integers(3, 7)))]
        ImageDraw.Draw(img).polygon(points, fill=tuple(int(c * 0.4) for c in RGB[colour]))
        img.save(folder / f"{i:06d}.png")
    return root


def text_queries(count: int) -> list[str]:
    """``count`` distinct short phrases."""
    phrases = [f"a {c} {s}" for s in SHAPES for c in COLOURS]
    return [
        phrases[i % len(phrases)] + (f" number {i // len(phrases)}" if i >= len(phrases) else "")
        for i in range(count)
    ]


def run_load(
    call: Callable[[object], object], queries: Sequence, concurrency: int
) -> tuple[list, list, float]:
    """Run ``call(q)`` for every query from ``concurrency`` threads: (latencies in s, what the calls
    returned, wall time in s)."""
    latencies: list[float] = []
    returned: list = []
    errors: list[BaseException] = []

    def worker(part: Sequence) -> None:
        for query in part:
            start = time.perf_counter()
            try:
                out = call(query)
            except BaseException as exc:  # reported after the run
                errors.append(exc)
                return
            latencies.append(time.perf_counter() - start)
            returned.append(out)

    threads = [threading.Thread(target=worker, args=(queries[i::concurrency],)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} queries failed, e.g. {errors[0]!r}") from errors[0]
    return latencies, returned, wall


def compare(query: str, paths: dict, queries: Sequence, concurrency: int, rounds: int) -> list[Load]:
    """Each path of ``paths`` (name -> call) on ``queries``, in ``rounds`` interleaved blocks (A B A B ...),
    so that a change in the machine's background load hits every path alike."""
    latencies = {name: [] for name in paths}
    returned = {name: [] for name in paths}
    wall = dict.fromkeys(paths, 0.0)
    for r in range(rounds):
        block = queries[r::rounds]
        for name, call in paths.items():
            lat, out, seconds = run_load(call, block, concurrency)
            latencies[name] += lat
            returned[name] += out
            wall[name] += seconds
    results = []
    for name in paths:
        ms = 1000 * np.asarray(latencies[name])
        took = [t for t in returned[name] if t is not None]
        results.append(
            Load(
                query,
                name,
                concurrency,
                len(ms),
                float(np.percentile(ms, 50)),
                float(np.percentile(ms, 99)),
                len(ms) / wall[name],
                float(np.percentile(took, 50)) if took else None,
            )
        )
    return results


@contextlib.contextmanager
def serve_process(index_dir: Path, timeout_s: float = 300) -> Iterator[str]:
    """``mcip serve`` on a free loopback port in a child process; yields its base URL."""
    command = [sys.executable, "-m", "mcip.cli", "serve", "--index", str(index_dir), "--port", "0"]
    command += ["--log-level", "warning"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, lines = None, []
        for line in proc.stdout:
            lines.append(line)
            if found := re.search(r"serving .* at (http://[^ ]+?)/ ", line):
                url = found.group(1)
                break
        if url is None:
            raise RuntimeError("mcip serve did not start:\n" + "".join(lines))
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its output
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(url + "/health", timeout=5).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("mcip serve did not answer /health") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def serve_thread(index: SearchIndex) -> Iterator[str]:
    """The app on a thread of this process (quick checks; shares this process's GIL with the client)."""
    from mcip.serve import create_app, start_in_thread

    with start_in_thread(create_app(index)) as server:
        yield server.url


def bench(
    index: SearchIndex,
    url: str,
    requests: int,
    concurrency: Sequence[int],
    k: int,
    rounds: int = 5,
    seed: int = 0,
) -> list[Load]:
    """Every (query kind, concurrency) in-process and over HTTP, on the same queries, after a warm-up
    pass of all queries on both paths."""
    rng = np.random.default_rng(seed)
    probes = rng.standard_normal((8, index.dim)).astype(np.float32)  # random directions: varied ids
    pool = sorted({h.id for v in probes for h in index.search_vector(v, k=min(1000, len(index)))})
    ids = [pool[i] for i in rng.integers(0, len(pool), requests)]
    kinds = {"text": text_queries(requests), "id": ids}
    results = []
    with httpx.Client(
        base_url=url, timeout=120, limits=httpx.Limits(max_connections=max(concurrency))
    ) as client:
        for kind, queries in kinds.items():
            key = "text" if kind == "text" else "id"

            def local(q, kind=kind) -> None:
                if kind == "text":
                    index.search(text=q, k=k)
                else:
                    index.search_by_id(q, k=k)

            def remote(q, key=key):
                response = client.get("/search", params={key: q, "k": k})
                response.raise_for_status()
                return response.json()["took_ms"]

            paths = {"in-process": local, "HTTP": remote}
            for call in paths.values():  # every query once: both models see every text shape first
                run_load(call, queries, max(concurrency))
            for c in concurrency:
                results += compare(kind, paths, queries, c, rounds)
    return results


def markdown(results: list[Load]) -> str:
    rows = [
        "| query | path | concurrency | requests | p50 ms | p99 ms | queries/s | HTTP / in-process "
        "(p50, queries/s) | server's took_ms p50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(r.query, r.concurrency): r for r in results if r.path == "in-process"}
    for r in results:
        ratio, took = "", ""
        if r.path == "HTTP":
            b = base[(r.query, r.concurrency)]
            ratio = f"{r.p50_ms / b.p50_ms:.2f}x, {r.qps / b.qps:.2f}x"
            took = f"{r.took_ms:.2f}"
        path = "`SearchIndex` in-process" if r.path == "in-process" else "`GET /search` over HTTP"
        rows.append(
            f"| {r.query} | {path} | {r.concurrency} | {r.requests} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.qps:.1f} | {ratio} | {took} |"
        )
    return "\n".join(rows)


def result_lines(results: list[Load]) -> list[str]:
    """``RESULT`` lines of the HTTP rows: p50 and p99 latency and throughput relative to in-process."""
    base = {(r.query, r.concurrency): r for r in results if r.path == "in-process"}
    lines = []
    for r in results:
        if r.path != "HTTP":
            continue
        name = f"serve_{r.query}_c{r.concurrency}"
        lines += [f"RESULT {name}_p50_ms {r.p50_ms:.2f}", f"RESULT {name}_p99_ms {r.p99_ms:.2f}"]
        lines.append(f"RESULT {name}_http_vs_inprocess_qps {r.qps / base[(r.query, r.concurrency)].qps:.3f}")
    return lines


def ensure_index(index_dir: Path, n: int, model: str, batch_size: int) -> None:
    if (index_dir / "manifest.json").is_file():
        return
    images = synthetic_images(index_dir.with_name(index_dir.name + "-images"), n)
    start = time.perf_counter()
    summary = build_index(model, images, index_dir, batch_size=batch_size, progress=True)
    print(f"built {index_dir}: {summary['count']} images in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--index-dir", type=Path, help="index to serve (built here when absent; default: a temp dir)"
    )
    p.add_argument("--n", type=int, default=2000, help="synthetic images when the index is built")
    p.add_argument("--model", default="composed:lab", help="model that builds the index")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--requests", type=int, default=400, help="queries per configuration")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="client threads")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5, help="interleaved blocks per configuration")
    p.add_argument("--server", choices=["process", "thread"], default="process", help="where uvicorn runs")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index_dir or Path(tmp) / "index"
        ensure_index(index_dir, args.n, args.model, args.batch_size)
        index = SearchIndex.open(index_dir)
        server = serve_process(index_dir) if args.server == "process" else serve_thread(index)
        with index, server as url:
            print(
                f"{len(index):,} images, {index.info['model']} (D={index.dim}, {index.info['backend']} "
                f"{index.info.get('factory')}), k={args.k}, server: {args.server} at {url}, "
                f"{os.cpu_count()} CPU cores"
            )
            load = os.getloadavg()[0]
            results = bench(index, url, args.requests, args.concurrency, args.k, args.rounds)
    print(f"\nmachine load average (1 min) before / after: {load:.1f} / {os.getloadavg()[0]:.1f}")
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print("\n".join(result_lines(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
