"""Running the app with uvicorn: in the foreground (``mcip serve``) or on a background thread (tests,
benchmarks, notebooks)."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mcip.data.limits import ImageLimits
from mcip.errors import ConfigError, require
from mcip.export.onnx_model import OnnxModel, check_runtime, load_onnx_model


@dataclass(frozen=True)
class ServerSettings:
    """Connection limits of the uvicorn server, so slow or idle clients cannot hold it.

    Args:
        header_timeout_s: a connection must send a complete request line and headers within this many
            seconds of connecting (or of its previous response), or it is closed (slowloris).
        keep_alive_s: an idle keep-alive connection is closed after this many seconds (uvicorn's 5).
        max_connections: open connections (and requests in progress) beyond which new requests get 503
            (uvicorn's ``limit_concurrency``): a browser opens about 6, so 100 serves a team.
        max_header_bytes: the largest request line + headers (h11's 16 KiB); larger gets 400.
    """

    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 100
    max_header_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "keep_alive_s", "max_connections", "max_header_bytes"):
            if not 0 < getattr(self, name) < math.inf:  # also refuses NaN
                raise ConfigError(f"{name} must be positive (and finite), got {getattr(self, name)}.")

    def uvicorn_config(self, app, log_level: str, **kwargs):
        """The ``uvicorn.Config`` serving ``app`` with these limits (h11, header deadline)."""
        uvicorn = require("uvicorn", "serve", "mcip serve")
        from mcip.serve.protocol import with_header_timeout

        return uvicorn.Config(
            app,
            log_level=log_level,
            http=with_header_timeout(self.header_timeout_s),
            timeout_keep_alive=self.keep_alive_s,
            limit_concurrency=self.max_connections,
            h11_max_incomplete_event_size=self.max_header_bytes,
            **kwargs,
        )


def run_server(
    index_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_bytes: int | None = None,
    device: str = "cpu",
    log_level: str = "info",
    allowed_hosts: Sequence[str] = (),
    image_limits: ImageLimits | None = None,
    settings: ServerSettings | None = None,
    api_key_file: str | os.PathLike | None = None,
    query_gate=None,
    allow_shared_key_file: bool = False,
    model=None,
    runtime: str = "torch",
) -> None:
    """Open the index at ``index_dir`` (with the model it was built with) and serve it until interrupted.
    ``port=0`` picks a free port; the address is printed once the index is loaded.

    ``runtime``: ``torch`` (default: ``model`` None loads the model the index was built with, or give a
    model or spec with its image tower) or ``onnx``: ``model`` is an export folder (``mcip export --onnx``)
    or an :class:`~mcip.export.onnx_model.OnnxModel`, run by onnxruntime on ``device``, and must have been
    exported from the model the index was built with (its recorded fingerprint is checked).

    ``allowed_hosts`` adds Host names to :func:`~mcip.serve.hosts.default_allowed_hosts` (the loopback
    names and the bound address; any Host when bound to 0.0.0.0 / :: and none are given).
    ``api_key_file``: keys that every route but the page requires (``mcip.serve.guard``; a file that group or
    others may read is refused unless ``allow_shared_key_file``); ``query_gate``:
    a :class:`~mcip.serve.guard.QueryGate` (searches at once, waiting, wait timeout).
    """
    from mcip.index import SearchIndex
    from mcip.serve.app import DEFAULT_MAX_UPLOAD_BYTES, create_app
    from mcip.serve.guard import read_api_keys
    from mcip.serve.hosts import default_allowed_hosts

    settings = settings or ServerSettings()
    check_runtime(runtime)
    if runtime == "onnx" and model is None:
        raise ConfigError(
            "--runtime onnx serves an ONNX export: name its folder with --model (written by mcip export "
            "--onnx MODEL --out FOLDER, where MODEL is the one the index was built with)."
        )
    keys = None  # read before anything loads
    if api_key_file is not None:
        keys = read_api_keys(api_key_file, allow_shared=allow_shared_key_file)
    hosts = default_allowed_hosts(host, allowed_hosts)
    sock = bind(host, port)  # before the (slow) model load: a busy port fails at once
    try:
        if runtime == "onnx" and not isinstance(model, OnnxModel):
            model = load_onnx_model(model, device=device)
        index = SearchIndex.open(index_dir, model=model, device=device)
        app = create_app(
            index,
            max_upload_bytes=max_upload_bytes or DEFAULT_MAX_UPLOAD_BYTES,
            image_limits=image_limits,
            allowed_hosts=hosts,
            api_keys=keys,
            query_gate=query_gate,
        )
    except BaseException:
        sock.close()
        raise
    _announce(index, _url(host, sock), hosts)
    if keys is None and hosts is None:
        print("warning: serving on every interface without --api-key-file: anyone who can reach this "
              "port can search the index and read its images.", flush=True)  # fmt: skip
    uvicorn = require("uvicorn", "serve", "mcip serve")
    uvicorn.Server(settings.uvicorn_config(app, log_level)).run(sockets=[sock])


def _announce(index, url: str, hosts: list[str] | None) -> None:
    model = index.info.get("model")
    if isinstance(index.model, OnnxModel):
        model = f"{model}; queries encoded by onnxruntime from {index.model.folder}"
    print(
        f"serving {len(index):,} images ({model}) at {url}/ (API docs: /docs; Ctrl-C stops)",
        flush=True,
    )
    if hosts is None:
        print("answering any Host header; name this machine's with --allowed-host NAME", flush=True)


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
    app,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    timeout_s: float = 30.0,
    settings: ServerSettings | None = None,
) -> BackgroundServer:
    """Serve ``app`` on a background thread with ``settings`` (default :class:`ServerSettings`);
    ``port=0`` picks a free port. Returns once it accepts connections."""
    uvicorn = require("uvicorn", "serve", "mcip serve")
    sock = bind(host, port)
    config = (settings or ServerSettings()).uvicorn_config(app, log_level, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="mcip-serve")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{sock.getsockname()[1]} did not start")
        time.sleep(0.02)
    return BackgroundServer(_url(host, sock), server, thread)
