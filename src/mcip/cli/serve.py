"""``mcip serve``: the HTTP API and search page over an index."""

from __future__ import annotations

import argparse
import dataclasses
import math


def cmd_serve(args: argparse.Namespace) -> int:
    from mcip.data.limits import default_image_limits
    from mcip.errors import ConfigError
    from mcip.serve.guard import QueryGate
    from mcip.serve.server import ServerSettings, run_server

    if not (0 < args.max_upload_mb < math.inf):  # also refuses NaN
        raise ConfigError(f"--max-upload-mb must be positive and finite (MiB), got {args.max_upload_mb}.")
    if args.model is not None and args.runtime != "onnx":
        raise ConfigError(
            "--model names an ONNX export folder for --runtime onnx; the torch runtime serves with the model "
            "the index was built with: add --runtime onnx, or drop --model."
        )
    limits = default_image_limits()
    overrides = {"max_aspect_ratio": args.max_aspect_ratio, "max_pixels": args.max_image_pixels}
    limits = dataclasses.replace(limits, **{k: v for k, v in overrides.items() if v is not None})
    settings = ServerSettings(
        header_timeout_s=args.header_timeout,
        keep_alive_s=args.keep_alive,
        max_connections=args.max_connections,
    )
    gate = QueryGate(args.max_concurrent_queries, args.max_waiting_queries, args.queue_timeout)
    run_server(
        args.index,
        host=args.host,
        port=args.port,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        device=args.device,
        log_level=args.log_level,
        allowed_hosts=args.allowed_host,
        image_limits=limits,
        settings=settings,
        api_key_file=args.api_key_file,
        allow_shared_key_file=args.allow_shared_key_file,
        query_gate=gate,
        model=args.model,
        runtime=args.runtime,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP API and search page over an index: text, image and click-to-search queries",
        description="Serve an index built with 'mcip index build': GET/POST /search, GET /images/{id}, "
        "GET /health, the search page at / and the API docs at /docs. Queries are encoded by the model "
        "the index was built with, or with --runtime onnx --model EXPORT_DIR by its ONNX export on "
        "onnxruntime.",
    )
    p.add_argument("--index", required=True, help="index folder (from mcip index build)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)"
    )
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0: any free port (printed)")
    p.add_argument(
        "--max-upload-mb", type=float, default=10.0, help="largest image upload accepted (default 10 MiB)"
    )
    _add_limit_options(p)
    p.add_argument(
        "--runtime",
        choices=["torch", "onnx"],  # mcip.export.RUNTIMES (tests/test_closed_sets.py)
        default="torch",
        help="what encodes queries: torch (default: the PyTorch model the index was built with), or onnx: "
        "the ONNX export named by --model, on onnxruntime (exported from the index's model: checked)",
    )
    p.add_argument(
        "--model",
        metavar="EXPORT_DIR",
        help="with --runtime onnx: the folder written by mcip export --onnx MODEL, MODEL being the model the "
        "index was built with",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="device of the query encoder: cpu (default) or cuda (onnx: onnxruntime-gpu)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def _add_limit_options(p: argparse.ArgumentParser) -> None:
    """Host check, image limits and connection limits (defaults: mcip.data.limits, ServerSettings)."""
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name the server answers besides localhost, 127.0.0.1, ::1 and the --host address "
        "(repeatable; '*': any). Other Host headers get 400 (DNS rebinding). Bound to 0.0.0.0 without "
        "it, any Host is answered",
    )
    p.add_argument(
        "--max-aspect-ratio",
        type=float,
        default=None,
        help="refuse uploads whose longer side is over this many times the shorter (default 50, or "
        "$MCIP_MAX_IMAGE_ASPECT)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help="refuse uploads of more than width x height pixels, checked before decoding (default "
        "89478485, Pillow's bomb limit, or $MCIP_MAX_IMAGE_PIXELS). Accepted formats: JPEG, PNG, WebP, "
        "GIF, BMP, TIFF (others: 415)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="close a connection whose request headers are not complete within S seconds (default 10)",
    )
    p.add_argument(
        "--keep-alive", type=float, default=5.0, metavar="S", help="close idle connections after S s (5)"
    )
    p.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="require 'Authorization: Bearer KEY' with a key of FILE (UTF-8, one per line, >= 16 characters, "
        "readable by its owner only: chmod 600) on every route but the search page, which asks for the key "
        "once; 401 without it",
    )
    p.add_argument(
        "--allow-shared-key-file",
        action="store_true",
        help="accept an --api-key-file that group or others may read (with a warning) instead of refusing it",
    )
    p.add_argument(
        "--max-concurrent-queries", type=int, default=8, metavar="N", help="searches run at once (default 8)"
    )
    p.add_argument(
        "--max-waiting-queries",
        type=int,
        default=64,
        metavar="N",
        help="searches that may wait for a slot; more get 503 with Retry-After at once (default 64)",
    )
    p.add_argument(
        "--queue-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="a search waiting longer than S seconds for a slot gets 503 with Retry-After (default 10)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=100,
        help="open connections beyond which new requests get 503 (default 100)",
    )
