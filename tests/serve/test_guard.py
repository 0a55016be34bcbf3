"""API keys, the bounded query queue (503 + Retry-After) and /metrics, on a real server (loopback)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mcip.cli import main
from mcip.errors import ConfigError
from mcip.serve import create_app, start_in_thread
from mcip.serve.guard import QueryGate, read_api_keys
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


def test_api_key_files_are_checked(tmp_path):
    good = tmp_path / "keys"
    good.write_text(f"# team keys\n{KEY}\n\n", encoding="utf-8")
    assert read_api_keys(good) == (KEY,)
    (tmp_path / "short").write_text("secret\n")
    with pytest.raises(ConfigError, match="16 characters"):
        read_api_keys(tmp_path / "short")
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no API key"):
        read_api_keys(tmp_path / "empty")
    with pytest.raises(ConfigError, match="Cannot read"):
        read_api_keys(tmp_path / "missing")


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
            import time

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
