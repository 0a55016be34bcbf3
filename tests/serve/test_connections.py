"""Connections on a real uvicorn server (loopback, raw sockets): Host check, header deadline, keep-alive,
connection cap, and a client that hangs up mid-upload leaves no traceback in the log."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from mcip.cli import main
from mcip.serve import create_app, start_in_thread
from mcip.serve.hosts import default_allowed_hosts
from mcip.serve.server import ServerSettings
from tests.serve.conftest import COLOURS, png_bytes, synthetic_image

FAST = ServerSettings(header_timeout_s=0.5, keep_alive_s=0.5, max_connections=4)
PATIENCE_S = 10.0  # a connection the server should close must be closed well before this


@pytest.fixture(scope="module")
def server(search_index):
    app = create_app(search_index, allowed_hosts=default_allowed_hosts("127.0.0.1"))
    with start_in_thread(app, settings=FAST) as server:
        yield server


@contextmanager
def connection(server) -> Iterator[socket.socket]:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=PATIENCE_S) as sock:
        yield sock


def closed_by_server(sock: socket.socket, trickle: bytes = b"") -> bool:
    """True once the server closes ``sock`` (within PATIENCE_S), sending ``trickle`` a byte at a time."""
    deadline = time.monotonic() + PATIENCE_S
    sock.settimeout(0.1)
    for byte in [trickle[i : i + 1] for i in range(len(trickle))] + [b""] * 1000:
        try:
            if byte:
                sock.sendall(byte)
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            return True
        if time.monotonic() > deadline:
            return False
    return False


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(v for k, v in _headers(head) if k == b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def _headers(head: bytes):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        yield name.strip().lower(), value.strip()


def test_incomplete_headers_are_cut_off(server):
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        assert closed_by_server(sock)


def test_headers_trickled_a_byte_at_a_time_are_cut_off(server):
    with connection(server) as sock:
        assert closed_by_server(sock, trickle=b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 200)


def test_idle_keep_alive_connections_are_closed(server):
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        assert closed_by_server(sock)


def test_a_slow_body_after_complete_headers_is_not_cut_off(server):
    """The deadline is for the headers: an upload's body may take longer than header_timeout_s."""
    image = png_bytes(synthetic_image(COLOURS["red"], seed=4))
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n\r\n'
        + image
        + b"\r\n--b--\r\n"
    )
    head = (
        "POST /search HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with connection(server) as sock:
        sock.sendall(head.encode() + body[:100])
        time.sleep(3 * FAST.header_timeout_s)
        sock.sendall(body[100:])
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_connections_over_the_cap_get_503(server):
    with connection(server) as a, connection(server) as b, connection(server) as c, connection(server) as d:
        d.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(d).startswith(b"HTTP/1.1 503")
        del a, b, c
    with connection(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_an_aborted_upload_logs_no_traceback(server):
    records = Records()
    logging.getLogger("uvicorn.error").addHandler(records)
    head = (
        "POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 100000\r\n\r\n--b\r\n"
        'Content-Disposition: form-data; name="image"; filename="q.png"\r\n\r\n'
    )
    try:
        with connection(server) as sock:
            sock.sendall(head.encode() + b"\x89PNG" + b"\0" * 5000)
            time.sleep(0.2)  # the app is reading the body now
        deadline = time.monotonic() + PATIENCE_S
        while server.server.server_state.tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.server.server_state.tasks
    finally:
        logging.getLogger("uvicorn.error").removeHandler(records)
    text = "\n".join(records.lines)
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1:1234", "[::1]:8000", "LOCALHOST."]
)
def test_localhost_names_are_answered(search_index, host):
    app = create_app(search_index, allowed_hosts=default_allowed_hosts("127.0.0.1"))
    with TestClient(app) as client:
        assert client.get("/health", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "a:b:c", ""])
def test_other_hosts_get_400(search_index, host):
    app = create_app(search_index, allowed_hosts=default_allowed_hosts("127.0.0.1", ["box.lan"]))
    with TestClient(app) as client:
        response = client.get("/search", params={"text": "red"}, headers={"host": host})
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert "--allowed-host" in detail and "box.lan" in detail and "localhost" in detail
        assert client.get("/health", headers={"host": "box.lan:80"}).status_code == 200


def test_default_allowed_hosts():
    assert default_allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    assert default_allowed_hosts("192.168.1.5")[-1] == "192.168.1.5"
    assert default_allowed_hosts("0.0.0.0") is None  # every interface: names unknown, any Host
    assert default_allowed_hosts("0.0.0.0", ["Box.LAN."]) == ["localhost", "127.0.0.1", "::1", "box.lan"]
    assert default_allowed_hosts("127.0.0.1", ["*"]) is None


def test_cli_passes_the_new_options(index_dir, monkeypatch):
    calls = []
    monkeypatch.setattr("mcip.serve.server.run_server", lambda *a, **kw: calls.append(kw))
    argv = ["serve", "--index", str(index_dir), "--allowed-host", "box.lan", "--allowed-host", "nas"]
    argv += [
        "--max-aspect-ratio",
        "10",
        "--header-timeout",
        "3",
        "--keep-alive",
        "2",
        "--max-connections",
        "7",
    ]
    assert main(argv) == 0
    (kw,) = calls
    assert kw["allowed_hosts"] == ["box.lan", "nas"] and kw["image_limits"].max_aspect_ratio == 10.0
    assert kw["settings"] == ServerSettings(header_timeout_s=3, keep_alive_s=2, max_connections=7)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-aspect-ratio", "0.5"], "max_aspect_ratio must be at least 1"),
        (["--max-image-pixels", "0"], "max_pixels must be a positive integer"),
        (["--header-timeout", "0"], "header_timeout_s must be positive"),
        (["--max-connections", "-1"], "max_connections must be positive"),
    ],
)
def test_bad_limits_exit_2(index_dir, capsys, argv, message):
    assert main(["serve", "--index", str(index_dir), *argv]) == 2
    assert message in capsys.readouterr().err
