"""Running the app with uvicorn: in the foreground (``mcip serve``) or on a background thread (tests,
benchmarks, notebooks)."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

from mcip.errors import ConfigError, require


def run_server(
    index_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_bytes: int | None = None,
    device: str = "cpu",
    log_level: str = "info",
) -> None:
    """Open the index at ``index_dir`` (with the model it was built with) and serve it until interrupted.
    ``port=0`` picks a free port; the address is printed once the index is loaded."""
    uvicorn = require("uvicorn", "serve", "mcip serve")
    from mcip.index import SearchIndex
    from mcip.serve.app import DEFAULT_MAX_UPLOAD_BYTES, create_app

    sock = bind(host, port)  # before the (slow) model load: a busy port fails at once
    try:
        index = SearchIndex.open(index_dir, device=device)
        app = create_app(index, max_upload_bytes=max_upload_bytes or DEFAULT_MAX_UPLOAD_BYTES)
    except BaseException:
        sock.close()
        raise
    print(
        f"serving {len(index):,} images ({index.info.get('model')}) at {_url(host, sock)}/ "
        "(API docs: /docs; Ctrl-C stops)",
        flush=True,
    )
    uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port); ConfigError when that is impossible."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"The port must be between 0 and 65535, got {port}.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(
        family, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # proto set: asyncio then sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {host}:{port} ({exc.strerror}); choose another --host/--port."
        ) from exc
    return sock


def _url(host: str, sock: socket.socket) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"


@dataclass
class BackgroundServer:
    """A uvicorn server on a daemon thread; ``url`` is its base address, :meth:`stop` ends it."""

    url: str
    server: object
    thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_in_thread(
    app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", timeout_s: float = 30.0
) -> BackgroundServer:
    """Serve ``app`` on a background thread; ``port=0`` picks a free port. Returns once it accepts
    connections."""
    uvicorn = require("uvicorn", "serve", "mcip serve")
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="mcip-serve")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{sock.getsockname()[1]} did not start")
        time.sleep(0.02)
    return BackgroundServer(_url(host, sock), server, thread)
