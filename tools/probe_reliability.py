"""Reliability and security probe of ``mcip index`` and ``mcip serve`` (issue 27): runs each item and prints
one table row per item, then ``RESULT`` lines.

    python tools/probe_reliability.py [--trials 10]

Everything happens in a temporary folder and on 127.0.0.1 (servers on background threads, free ports), with
a tiny random-weight model; it takes about a minute. The rows:

1. writes through a symlinked index: per trial a fresh index ``base.index`` with ``link.index -> base.index``
   and two concurrent adds (threads; in every other trial the second waits for the first, otherwise it is
   refused as busy), one through the link and one through the folder; lost =
   images an add reported as added that the index does not hold, plus trials where the link stopped being
   a symlink;
2. ``index remove`` between an interrupted add and its rerun: lost = rows the interrupted add had encoded that
   the rerun encoded again, plus trials where the skipped-file count changed;
3. filters: hand-written expected matches (typed JSONL and CSV catalogues) against the index's filter;
4. the filter cache: filtered queries from 8 threads at once (cache of 2 sets, 8 sets in use);
5. /metrics: sample lines before and after 1,000 requests with invented methods on invented paths (half
   without a key), after one request of each kind;
6. authenticated searches served while 10 clients without a key trickle POST bodies (--max-connections 10);
7. text queries served while uploads wait for their slot (one upload held inside the index);
8. tracebacks over the bad-input cases of ``index``, ``search`` and ``serve`` (``tools/probe_bad_inputs.py``,
   in-process; ``--full`` runs all its cases, each in its own process, which takes minutes);
9. a group-readable key file refused, an index folder made under umask 022 readable by others, HEAD on a
   GET route answered as GET without the body.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_bad_inputs

KEY = "probe-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _pngs(folder: Path, names: list[str], seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / name)
    return folder


def symlink_trials(root: Path, model, trials: int) -> tuple[str, bool]:
    from mcip.index import SearchIndex, add_to_index, build_index
    from mcip.index.lock import IndexBusyError

    lost = broken = refused = 0
    for t in range(trials):
        trial = root / f"sym{t}"
        base = _pngs(trial / "base", [f"b{i}.png" for i in range(4)], seed=t)
        news = [_pngs(trial / n, [f"{n}{i}.png" for i in range(6)], seed=100 + t) for n in ("a", "b")]
        build_index(model, base, trial / "base.index", progress=False)
        os.symlink("base.index", trial / "link.index")
        targets = [trial / "link.index", trial / "base.index"]

        def add(i: int, targets=targets, news=news, wait=30.0 * (t % 2)) -> set[str]:
            try:
                add_to_index(targets[i], news[i], model=model, progress=False, wait=wait)
            except IndexBusyError:
                return set()
            return {p.name for p in news[i].iterdir()}

        with ThreadPoolExecutor(2) as pool:
            added = list(pool.map(add, range(2)))
        refused += sum(not a for a in added)
        broken += not (trial / "link.index").is_symlink()
        with SearchIndex.open(trial / "base.index", load_model=False) as index:
            lost += len(set().union(*added) - set(index.ids))
    detail = f"{lost} lost in {trials} trials ({refused} adds refused as busy, {broken} links replaced)"
    return detail, lost == 0 and broken == 0


class _Interrupt(Exception):
    pass


def remove_trials(root: Path, model, trials: int) -> tuple[str, bool]:
    from mcip.index import add_to_index, build_index
    from mcip.index.maintain import remove_from_index

    lost = changed = 0
    encode = model.encode_image
    for t in range(trials):
        trial = root / f"rm{t}"
        base = _pngs(trial / "base", [f"b{i}.png" for i in range(4)], seed=t)
        (base / "broken.png").write_bytes(b"not a png")
        new = _pngs(trial / "new", [f"n{i:02d}.png" for i in range(40)], seed=200 + t)
        build_index(model, base, trial / "i", progress=False)
        batches = []

        def interrupted(pixels, *args, batches=batches, **kwargs):
            if len(batches) == 2:
                raise _Interrupt
            batches.append(len(pixels))
            return encode(pixels, *args, **kwargs)

        model.encode_image = interrupted
        try:
            add_to_index(trial / "i", new, model=model, batch_size=5, progress=False)
        except _Interrupt:
            pass
        finally:
            model.encode_image = encode
        remove_from_index(trial / "i", ["b0.png"])
        skipped = json.loads((trial / "i" / "manifest.json").read_text())["skipped_unreadable"]
        summary = add_to_index(trial / "i", new, model=model, batch_size=5, progress=False)
        lost += sum(batches) - summary["resumed_rows"]
        changed += skipped != 1
    return (
        f"{lost} encoded rows lost in {trials} trials; skipped count changed in {changed}",
        lost == changed == 0,
    )


JSONL = [
    {"id": "r0", "sku": 12345678901234567, "flag": True, "code": "1", "opt": "", "price": 5},
    {"id": "r1", "sku": 12345678901234568, "flag": False, "code": "01", "opt": "x", "price": 5.0},
    {"id": "r2", "sku": 12345678901234569, "flag": "true", "code": "1.0", "price": 4.5},
    {"id": "r3", "sku": "12345678901234567", "flag": None, "code": "1e0", "opt": None},
    {"id": "r4", "flag": 1, "code": " 1", "price": "5"},
]
JSONL_EXPECTED = {  # written by hand
    "sku=12345678901234567": {"r0", "r3"},
    "sku=12345678901234568": {"r1"},
    "flag=true": {"r0", "r2"},
    "flag!=false": {"r0", "r2", "r4"},
    "flag=1": {"r4"},
    "code=1": {"r0"},
    "opt=": {"r0"},
    "price=5": {"r0", "r1", "r4"},
    "price<5": {"r2"},
}
CSV = """path,id,sku,flag,code,price:float,zip:str
c0.png,c0,12345678901234567,TRUE,01,5,01234
c1.png,c1,12345678901234568,false,1,4.50,99999
c2.png,c2,,,,,
"""
CSV_EXPECTED = {  # written by hand: sku int, flag bool, code str (inferred); price float, zip str (declared)
    "sku=12345678901234567": {"c0"},
    "flag=true": {"c0"},
    "code=1": {"c1"},
    "code=": {"c2"},
    "price=4.5": {"c1"},
    "zip=01234": {"c0"},
}


def filter_cases(root: Path) -> tuple[str, bool]:
    from mcip.index import SearchIndex, index_embeddings

    (root / "f.jsonl").write_text("".join(json.dumps({"path": f"{r['id']}.png", **r}) + "\n" for r in JSONL))
    (root / "f.csv").write_text(CSV)
    equal = total = 0
    for name, n, expected in (("f.jsonl", 5, JSONL_EXPECTED), ("f.csv", 3, CSV_EXPECTED)):
        vectors = np.eye(n, 4, dtype=np.float32) + 0.1
        index_embeddings(
            vectors / np.linalg.norm(vectors, axis=1, keepdims=True), root / name, root / f"{name}.i"
        )
        with SearchIndex.open(root / f"{name}.i", load_model=False) as index:
            for where, rows in expected.items():
                got = {index.ids[r] for r in index.filter_rows([where]).tolist()}
                equal += got == rows
                total += 1
    return f"{equal} of {total} filters equal their hand-written matches", equal == total


def filter_cache(index) -> tuple[str, bool]:
    import mcip.index.search as search

    wheres = [[f"label={c}"] for c in ("red", "blue", "x", "y")] + [
        [f"id!={i}"] for i in ("a", "b", "c", "d")
    ]
    expected = {str(w): index.filter_rows(w).tolist() for w in wheres}
    saved, search.FILTER_CACHE = search.FILTER_CACHE, 2
    errors, wrong = [], 0

    def work(t: int) -> int:
        bad = 0
        for j in range(200):
            w = wheres[(t + j) % len(wheres)]
            try:
                bad += index.filter_rows(w).tolist() != expected[str(w)]
            except Exception as exc:
                errors.append(type(exc).__name__)
        return bad

    try:
        with ThreadPoolExecutor(8) as pool:
            wrong = sum(pool.map(work, range(8)))
    finally:
        search.FILTER_CACHE = saved
    return f"1,600 queries from 8 threads: {len(errors)} errors, {wrong} wrong", not errors and not wrong


def _samples(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def metrics_series(index) -> tuple[str, bool]:
    import httpx

    from mcip.serve import create_app, start_in_thread

    with start_in_thread(create_app(index, api_keys=[KEY])) as server, httpx.Client(base_url=server.url) as c:
        for headers in (AUTH, {}):  # one of each kind first: the series a kind needs exist once
            c.request("MADEUP", "/health/x", headers=headers)
        c.get("/metrics", headers=AUTH)
        before = _samples(c.get("/metrics", headers=AUTH).text)
        for i in range(1000):
            c.request(f"M{i}", f"/health/{i}", headers=AUTH if i % 2 else {})
        after_text = c.get("/metrics", headers=AUTH).text
    after = _samples(after_text)
    return f"{before} sample lines before, {after} after ({len(after_text):,} bytes)", before == after


def trickle(index) -> tuple[str, bool]:
    import httpx

    from mcip.serve import create_app, start_in_thread
    from mcip.serve.server import ServerSettings

    settings = ServerSettings(header_timeout_s=3, keep_alive_s=5, max_connections=10)
    head = (
        b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 1000000\r\n\r\n--b\r\n"
    )
    stop, reconnects = threading.Event(), [0]
    with start_in_thread(create_app(index, api_keys=[KEY]), settings=settings) as server:
        host, port = server.url.removeprefix("http://").split(":")

        def hostile() -> None:  # sends a POST without a key and trickles its body; reconnects when cut
            while not stop.is_set():
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((host, int(port)), timeout=2) as s,
                ):
                    s.sendall(head)
                    while not stop.is_set():
                        s.sendall(b"x")
                        time.sleep(0.1)
                reconnects[0] += 1

        threads = [threading.Thread(target=hostile, daemon=True) for _ in range(10)]
        for th in threads:
            th.start()
        time.sleep(0.5)
        codes = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(50):
                codes.append(client.get("/search", params={"text": f"red {i}"}, headers=AUTH).status_code)
                time.sleep(0.05)
        stop.set()
        for th in threads:
            th.join(5)
    ok = codes.count(200)
    return f"{ok} of {len(codes)} served (the 10 clients were cut off {reconnects[0]} times)", ok == len(
        codes
    )


class _UploadsHeld:
    """The index, but image searches wait on ``release``: an upload held inside the index."""

    def __init__(self, index) -> None:
        self.index, self.release, self.entered = index, threading.Event(), threading.Semaphore(0)

    def __getattr__(self, name):
        return getattr(self.index, name)

    def __len__(self) -> int:
        return len(self.index)

    def search(self, *args, image=None, **kwargs):
        if image is not None:
            self.entered.release()
            self.release.wait(30)
        return self.index.search(*args, image=image, **kwargs)


def uploads_apart(index, png: bytes) -> tuple[str, bool]:
    import httpx

    from mcip.serve import create_app, start_in_thread
    from mcip.serve.guard import QueryGate

    held = _UploadsHeld(index)
    app = create_app(held, query_gate=QueryGate(2, 2, 1.0), upload_gate=QueryGate(1, 4, 30.0))
    with (
        start_in_thread(app) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        uploads = [pool.submit(client.post, "/search", files={"image": ("q.png", png)}) for _ in range(4)]
        held.entered.acquire(timeout=30)
        time.sleep(0.3)
        codes = [client.get("/search", params={"text": f"blue {i}"}).status_code for i in range(10)]
        held.release.set()
        done = [u.result(30).status_code for u in uploads]
    ok = codes.count(200)
    detail = f"{ok} of 10 text queries served while 4 uploads queued (uploads: {done.count(200)} of 4 served)"
    return detail, ok == 10 and done == [200] * 4


def bad_inputs(root: Path, model_dir: str, full: bool) -> tuple[str, bool]:
    from mcip.cli import main

    if full:
        results = probe_bad_inputs.run_all(jobs=2, model=model_dir)
        tracebacks = sum(tb for _, _, tb in results)
        return f"{tracebacks} tracebacks in {len(results)} cases (each its own process)", tracebacks == 0
    import uvicorn

    _, index, inputs = probe_bad_inputs.prepare(root / "bad", model_dir)
    cases = [
        c for c in probe_bad_inputs.cases(model_dir, index, inputs) if c[0] in ("index", "search", "serve")
    ]
    run, uvicorn.Server.run = uvicorn.Server.run, None  # a case that would start a server fails instead
    tracebacks = exit0 = 0
    cwd = os.getcwd()
    os.chdir(root / "bad")
    try:
        with (
            open(os.devnull, "w") as null,
            contextlib.redirect_stdout(null),
            contextlib.redirect_stderr(null),
        ):
            for argv in cases:
                try:
                    exit0 += main(argv) == 0
                except SystemExit:
                    pass
                except Exception:
                    tracebacks += 1
    finally:
        uvicorn.Server.run = run
        os.chdir(cwd)
    return (
        f"{tracebacks} tracebacks, {exit0} exits 0, in {len(cases)} cases (in-process)",
        tracebacks == exit0 == 0,
    )


def refusals(root: Path, index, model) -> tuple[str, bool]:
    import stat

    from fastapi.testclient import TestClient

    from mcip.errors import ConfigError
    from mcip.index import build_index
    from mcip.serve import create_app
    from mcip.serve.guard import read_api_keys

    keys = root / "keys.txt"
    keys.write_text(KEY + "\n")
    keys.chmod(0o644)
    try:
        read_api_keys(keys)
        refused = False
    except ConfigError:
        refused = True
    old = os.umask(0o022)
    try:
        build_index(
            model, _pngs(root / "umask", ["0.png", "1.png"], seed=9), root / "umask.index", progress=False
        )
    finally:
        os.umask(old)
    mode = stat.S_IMODE((root / "umask.index").stat().st_mode)
    with TestClient(create_app(index)) as client:
        head = client.head("/health")
    head_ok = head.status_code == 200 and head.content == b""
    detail = f"0644 key file refused: {refused}; index folder {mode:o} under umask 022; HEAD /health {head.status_code}"
    return detail, refused and mode == 0o755 and head_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="trials of each data-loss case (default 10)")
    parser.add_argument("--full", action="store_true", help="every bad-input case, each in its own process")
    args = parser.parse_args()
    import logging

    import mcip
    from mcip.index import SearchIndex, build_index

    logging.disable(logging.WARNING)  # "no pretrained weights" for the random model
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = probe_bad_inputs.tiny_model(root)
        model = mcip.load_model(model_dir)
        build_index(
            model,
            _pngs(root / "red", [f"{i}.png" for i in range(6)], seed=1),
            root / "s.index",
            progress=False,
        )
        png = (root / "red" / "0.png").read_bytes()
        checks = [
            (
                "1 writes through a symlinked index (rows lost)",
                lambda: symlink_trials(root, model, args.trials),
            ),
            (
                "2 remove after an interrupted add (rows lost)",
                lambda: remove_trials(root, model, args.trials),
            ),
            ("3 typed filters vs hand-written matches", lambda: filter_cases(root)),
            ("4 filter cache under concurrent queries", lambda: filter_cache(opened)),
            ("5 /metrics series under 1,000 invented methods", lambda: metrics_series(opened)),
            ("6 authenticated searches while 10 clients trickle", lambda: trickle(opened)),
            ("7 text queries while uploads wait", lambda: uploads_apart(opened, png)),
            ("8 bad-input suite: tracebacks", lambda: bad_inputs(root, model_dir, args.full)),
            ("9 key file, umask, HEAD", lambda: refusals(root, opened, model)),
        ]
        with SearchIndex.open(root / "s.index") as opened:
            for name, check in checks:
                t0 = time.perf_counter()
                detail, ok = check()
                rows.append((name, detail, ok, time.perf_counter() - t0))
    width = max(len(r[0]) for r in rows)
    print(f"| {'item':<{width}} | result | pass | s |")
    print(f"|{'-' * (width + 2)}|---|---|---|")
    for name, detail, ok, seconds in rows:
        print(f"| {name:<{width}} | {detail} | {'yes' if ok else 'NO'} | {seconds:.1f} |")
    print(f"probe took {time.perf_counter() - start:.0f} s")
    print(f"RESULT reliability_items_failed {sum(not r[2] for r in rows)} target <=0")
    return 0 if all(r[2] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
