"""Concurrent requests on a real uvicorn server (loopback): same answers as one at a time, queries run
side by side in the thread pool, and a slow query never blocks the others."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from mcip.serve import create_app, start_in_thread
from tests.serve.conftest import COLOURS, png_bytes, synthetic_image


@pytest.fixture(scope="module")
def server(app):
    with start_in_thread(app) as server:
        yield server


def requests_mix() -> list[tuple[str, dict]]:
    texts = ["a red emoji", "green", "a photo of a blue car", "yellow face", "the small tree", "two cats"]
    ids = ["red/1.png", "green/2.png", "blue/3.png", "yellow/4.png"]
    images = [png_bytes(synthetic_image(c, seed=50 + i)) for i, c in enumerate(COLOURS.values())]
    out = [("get", {"params": {"text": t, "k": 5}}) for t in texts]
    out += [("get", {"params": {"id": i, "k": 5}}) for i in ids]
    out += [("post", {"files": {"image": ("q.png", d, "image/png")}, "data": {"k": "5"}}) for d in images]
    mixed = {"text": "red", "alpha": "0.7"}
    out.append(("post", {"files": {"image": ("q.png", images[0], "image/png")}, "data": mixed}))
    return out * 2


def call(client: httpx.Client, method: str, kwargs: dict) -> list:
    response = getattr(client, method)("/search", **kwargs)
    response.raise_for_status()
    return [(r["id"], round(r["score"], 5)) for r in response.json()["results"]]


def test_parallel_requests_equal_sequential_ones(server, search_index):
    mix = requests_mix()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        sequential = [call(client, m, kw) for m, kw in mix]
        with ThreadPoolExecutor(16) as pool:
            parallel = list(pool.map(lambda item: call(client, *item), mix))
    assert parallel == sequential
    assert len({tuple(r) for r in sequential}) > 1  # the queries really differ


@contextmanager
def client_of(index) -> Iterator[httpx.Client]:
    """An HTTP client of a fresh server over ``index`` (on a background thread)."""
    with (
        start_in_thread(create_app(index)) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        yield client


class GatedIndex:
    """The real index behind a gate: each search waits at ``barrier`` (all N must be inside a search at
    once) or on ``release``; everything else is the real index."""

    def __init__(self, index, barrier: threading.Barrier | None = None) -> None:
        self.index, self.barrier, self.release = index, barrier, threading.Event()
        self.entered = threading.Semaphore(0)

    def __getattr__(self, name):
        return getattr(self.index, name)

    def __len__(self) -> int:
        return len(self.index)

    def _gate(self) -> None:
        self.entered.release()
        if self.barrier is not None:
            self.barrier.wait()
        else:
            assert self.release.wait(30), "never released"

    def search(self, *args, **kwargs):
        self._gate()
        return self.index.search(*args, **kwargs)

    def search_by_id(self, *args, **kwargs):
        self._gate()
        return self.index.search_by_id(*args, **kwargs)


def test_queries_run_side_by_side(search_index):
    """Four searches (text, id, upload) must all be inside the index at the same time, or the barrier
    breaks: the server does not serialise requests."""
    gated = GatedIndex(search_index, threading.Barrier(4, timeout=30))
    image = png_bytes(synthetic_image(COLOURS["red"], seed=5))
    mix = [
        ("get", {"params": {"text": "a red emoji"}}),
        ("get", {"params": {"id": "green/2.png"}}),
        ("post", {"files": {"image": ("q.png", image, "image/png")}}),
        ("get", {"params": {"text": "blue"}}),
    ]
    with client_of(gated) as client, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda item: call(client, *item), mix))
    assert all(len(r) == 10 for r in results)


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_stuck_query_does_not_block_the_server(search_index, method):
    gated = GatedIndex(search_index)
    image = png_bytes(synthetic_image(COLOURS["red"], seed=5))
    kwargs = {"params": {"text": "red"}} if method == "get" else {"files": {"image": ("q.png", image)}}
    with client_of(gated) as client, ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(call, client, method, kwargs)
        assert gated.entered.acquire(timeout=30)  # the query is inside the index now
        assert client.get("/health").json()["count"] == len(search_index)
        assert client.get("/images/red%2F1.png").status_code == 200
        assert not stuck.done()
        gated.release.set()
        assert len(stuck.result(timeout=60)) == 10


def test_listening_socket_is_tcp_so_replies_are_not_delayed():
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket says IPPROTO_TCP;
    without it every keep-alive reply waits ~40 ms for a delayed ACK (Nagle)."""
    import socket

    from mcip.serve.server import bind

    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
