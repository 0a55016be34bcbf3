"""API keys, the bounded query queue (503 + Retry-After) and /metrics, on a real server (loopback)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mcip.cli import main
from mcip.errors import ConfigError
from mcip.serve import create_app, start_in_thread
from mcip.serve.guard import QueryGate, read_api_keys
from mcip.serve.server import ServerSettings
from tests.serve.conftest import COLOURS, png_bytes, synthetic_image
from tests.serve.test_concurrency import GatedIndex

KEY = "k3y-0123456789abcdef"
# a Prometheus text-format sample: NAME{label="value",...} NUMBER (values may hold escaped quotes, braces)
SAMPLE = r'[a-z_]+(\{[a-z_]+="(?:[^"\\]|\\.)*"(?:,[a-z_]+="(?:[^"\\]|\\.)*")*\})? [0-9.e+-]+'


def test_api_keys_protect_everything_but_the_page(search_index, tmp_path):
    app = create_app(search_index, api_keys=[KEY, "an-older-key-still-valid"])
    with start_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200
        for path in ("/search?text=red", "/health", "/metrics", "/openapi.json", "/images/red%2F1.png"):
            refused = client.get(path)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", path
            wrong = client.get(path, headers={"Authorization": f"Bearer {KEY}x"})
            assert wrong.status_code == 401, path
        ok = {"Authorization": f"Bearer {KEY}"}
        assert client.get("/search", params={"text": "red"}, headers=ok).status_code == 200
        assert client.get("/images/red%2F1.png", headers=ok).status_code == 200
        older = {"Authorization": "Bearer an-older-key-still-valid"}
        assert client.get("/health", headers=older).status_code == 200  # rotation: both keys work
        assert client.get("/health", headers={"Authorization": f"Basic {KEY}"}).status_code == 401


def _key_file(path, data: str | bytes, mode: int = 0o600):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    path.chmod(mode)
    return path


def test_api_key_files_are_checked(tmp_path):
    good = _key_file(tmp_path / "keys", f"# team keys\n{KEY}\n\n")
    assert read_api_keys(good) == (KEY,)
    with pytest.raises(ConfigError, match="16 characters"):
        read_api_keys(_key_file(tmp_path / "short", "secret\n"))
    with pytest.raises(ConfigError, match="no API key"):
        read_api_keys(_key_file(tmp_path / "empty", "# nothing\n"))
    with pytest.raises(ConfigError, match="Cannot read"):
        read_api_keys(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 20\)"):
        read_api_keys(_key_file(tmp_path / "latin1", (KEY + "\xe9\n").encode("latin-1")))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_key_file_others_may_read_is_refused_unless_allowed(tmp_path, mode):
    """As ssh does with a private key: refused with the chmod that fixes it; allowed with a warning."""
    shared = _key_file(tmp_path / "keys", KEY + "\n", mode)
    with pytest.raises(ConfigError, match=f"can be read by other users.*chmod 600 {shared}"):
        read_api_keys(shared)
    with pytest.warns(UserWarning, match="can be read by other users"):
        assert read_api_keys(shared, allow_shared=True) == (KEY,)


def test_serve_refuses_a_shared_key_file_and_a_non_utf8_one(index_dir, tmp_path, capsys):
    argv = ["serve", "--index", str(index_dir), "--port", "0", "--api-key-file"]
    assert main([*argv, str(_key_file(tmp_path / "shared", KEY + "\n", 0o644))]) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and "--allow-shared-key-file" in err and "Traceback" not in err
    assert main([*argv, str(_key_file(tmp_path / "bin", b"\xff\xfe\x00k"))]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_serve_refuses_a_bad_key_file_before_loading_anything(index_dir, tmp_path, capsys):
    status = main(
        ["serve", "--index", str(index_dir), "--port", "0", "--api-key-file", str(tmp_path / "nope")]
    )
    assert status == 2 and "Cannot read the API-key file" in capsys.readouterr().err


def test_a_full_queue_answers_503_with_retry_after_at_once(search_index):
    gated = GatedIndex(search_index)
    app = create_app(gated, query_gate=QueryGate(concurrency=1, max_waiting=1, wait_timeout_s=30))
    with (
        start_in_thread(app) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
        ThreadPoolExecutor(2) as pool,
    ):
        running = pool.submit(client.get, "/search", params={"text": "red"})
        assert gated.entered.acquire(timeout=30)  # one query is inside the index
        waiting = pool.submit(client.get, "/search", params={"text": "blue"})
        for _ in range(100):  # until the second one waits for the slot
            if app.state.gate.waiting == 1:
                break
            time.sleep(0.05)
        refused = client.get("/search", params={"id": "red/1.png"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["detail"]
        assert client.get("/health").status_code == 200  # not a search: not queued
        gated.release.set()
        assert running.result(timeout=60).status_code == 200 and waiting.result(timeout=60).status_code == 200
        metrics = client.get("/metrics").text
        assert "mcip_queries_refused_total 1" in metrics


def test_a_wait_longer_than_the_timeout_answers_503(search_index):
    gated = GatedIndex(search_index)
    app = create_app(gated, query_gate=QueryGate(concurrency=1, max_waiting=4, wait_timeout_s=0.5))
    with (
        start_in_thread(app) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(client.get, "/search", params={"text": "red"})
        assert gated.entered.acquire(timeout=30)
        late = client.get("/search", params={"text": "blue"})
        assert late.status_code == 503 and "within 0.5 s" in late.json()["detail"]
        gated.release.set()
        assert running.result(timeout=60).status_code == 200


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_count_requests_and_latencies_per_route(search_index):
    app = create_app(search_index)
    with start_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(3):
            assert client.get("/search", params={"text": "red", "k": 3}).status_code == 200
        assert client.get("/search", params={"id": "nope"}).status_code == 404
        assert client.get("/images/red%2F1.png").status_code == 200
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for line in text.splitlines():  # every sample line is NAME{LABELS} VALUE
        assert line.startswith("#") or re.fullmatch(SAMPLE, line), line
    s = _samples(text)
    assert s['mcip_requests_total{method="GET",route="/search",status="200"}'] == 3
    assert s['mcip_requests_total{method="GET",route="/search",status="404"}'] == 1
    assert s['mcip_requests_total{method="GET",route="/images/{image_id:path}",status="200"}'] == 1
    buckets = [
        v for k, v in s.items() if k.startswith('mcip_request_duration_seconds_bucket{route="/search"')
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 4  # cumulative; +Inf counts every request
    assert s['mcip_request_duration_seconds_count{route="/search"}'] == 4
    assert s["mcip_queries_running"] == 0 and s["mcip_queries_waiting"] == 0


def _raw(server, request: bytes, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send ``request`` on a new connection; the response bytes and whether the server closed it."""
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
            return data, True
        except TimeoutError:
            return data, False


def test_api_keys_cover_post_head_options_and_unknown_methods(search_index):
    """Every method on a protected route needs the key: 401 from the headers alone, and the connection is
    closed (a POST's body is never read). With the key, HEAD is GET without a body; others get 405."""
    app = create_app(search_index, api_keys=[KEY])
    ok = {"Authorization": f"Bearer {KEY}"}
    image = png_bytes(synthetic_image(COLOURS["red"], seed=4))
    with start_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for method in ("POST", "HEAD", "OPTIONS", "BREW", "DELETE"):
            refused = client.request(method, "/search")
            assert refused.status_code == 401 and refused.headers["connection"] == "close", method
        posted = client.post("/search", files={"image": ("q.png", image)})
        assert posted.status_code == 401
        assert client.post("/search", files={"image": ("q.png", image)}, headers=ok).status_code == 200
        head, get = client.head("/health", headers=ok), client.get("/health", headers=ok)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
        assert client.options("/health", headers=ok).status_code == 405
        assert client.request("BREW", "/health", headers=ok).status_code == 405
        # a POST whose body never comes: answered and closed at once, not after a body timeout
        answer, closed = _raw(
            server,
            b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1000000\r\n\r\n--b\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 401") and closed


def test_head_on_get_routes_answers_as_get_without_a_body(client):
    for path in ("/health", "/search?text=red", "/images/red%2F1.png", "/", "/metrics"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], path


def test_invented_methods_and_unauthenticated_requests_add_no_metrics_series(search_index):
    """/metrics used to grow by one series per made-up method; now methods outside the HTTP set count as
    ``other``, and requests without a key add to one unlabelled counter."""
    app = create_app(search_index, api_keys=[KEY])
    ok = {"Authorization": f"Bearer {KEY}"}
    with start_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        client.request("MADEUP", "/health", headers=ok)
        client.request("MADEUP", "/health")
        client.get("/metrics", headers=ok)  # its own series exist before the first count
        before = _samples(client.get("/metrics", headers=ok).text)
        for i in range(60):
            client.request(f"X{i}", "/health", headers=ok)
            client.request(f"Y{i}", f"/nowhere/{i}")
        after = _samples(client.get("/metrics", headers=ok).text)
    assert set(after) == set(before)
    assert after['mcip_requests_total{method="other",route="/health",status="405"}'] == 61
    assert after["mcip_unauthorized_requests_total"] == 61
    assert not any('method="X' in name or 'method="Y' in name for name in after)


def test_clients_without_a_key_trickling_a_body_do_not_hold_the_connections(search_index):
    """With 5 connections allowed, 4 clients without a key send a POST's headers and trickle its body: each
    is answered 401 and closed from its headers, so authenticated requests are served meanwhile (they got
    503 for as long as the trickle lasted: 4 held connections and the request's own reach the cap)."""
    import socket

    settings = ServerSettings(header_timeout_s=5, keep_alive_s=5, max_connections=5)
    app = create_app(search_index, api_keys=[KEY])
    ok = {"Authorization": f"Bearer {KEY}"}
    head = (
        b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    with start_in_thread(app, settings=settings) as server:
        host, port = server.url.removeprefix("http://").split(":")
        socks = []
        try:
            for _ in range(4):
                socks.append(socket.create_connection((host, int(port)), timeout=5))
                socks[-1].sendall(head)
            served = []
            for _ in range(10):
                for sock in socks:  # keep trickling while the connection lasts
                    with contextlib.suppress(OSError):
                        sock.sendall(b"x")
                served.append(httpx.get(server.url + "/health", headers=ok, timeout=10).status_code)
                time.sleep(0.05)
            answers = []
            for sock in socks:
                data, closed = b"", False
                with contextlib.suppress(OSError):
                    while chunk := sock.recv(65536):
                        data += chunk
                    closed = True  # recv returned b"": the server closed it
                answers.append((data.split(b"\r\n", 1)[0], closed))
        finally:
            for sock in socks:
                sock.close()
    assert served == [200] * 10
    assert answers == [(b"HTTP/1.1 401 Unauthorized", True)] * 4


class UploadsStuck:
    """The real index, but image searches wait on ``release`` (text and id searches go straight through)."""

    def __init__(self, index) -> None:
        self.index, self.release, self.entered = index, threading.Event(), threading.Semaphore(0)

    def __getattr__(self, name):
        return getattr(self.index, name)

    def __len__(self) -> int:
        return len(self.index)

    def search(self, *args, image=None, **kwargs):
        if image is not None:
            self.entered.release()
            assert self.release.wait(60)
        return self.index.search(*args, image=image, **kwargs)


def test_text_and_id_queries_do_not_wait_behind_uploads(search_index):
    """Uploads wait for their own slot (one at a time here); they used to hold a query slot while waiting,
    so with 2 query slots, 3 uploads made every text query wait and then fail with 503."""
    stuck = UploadsStuck(search_index)
    gate = QueryGate(concurrency=2, max_waiting=2, wait_timeout_s=1)
    app = create_app(stuck, query_gate=gate, upload_gate=QueryGate(1, 2, 30))
    image = png_bytes(synthetic_image(COLOURS["red"], seed=4))
    with (
        start_in_thread(app) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        uploads = [pool.submit(client.post, "/search", files={"image": ("q.png", image)}) for _ in range(3)]
        assert stuck.entered.acquire(timeout=30)  # one upload is inside, two wait for the upload slot
        for _ in range(100):
            if app.state.upload_gate.waiting == 2:
                break
            time.sleep(0.05)
        assert app.state.upload_gate.waiting == 2
        assert client.get("/search", params={"text": "red"}).status_code == 200
        assert client.get("/search", params={"id": "red/1.png"}).status_code == 200
        refused = client.post("/search", files={"image": ("q.png", image)})  # the upload queue is full
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        stuck.release.set()
        assert [u.result(timeout=60).status_code for u in uploads] == [200] * 3
        text = client.get("/metrics").text
    assert "mcip_uploads_refused_total 1" in text and "mcip_queries_refused_total 0" in text
