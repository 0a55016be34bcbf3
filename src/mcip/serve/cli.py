"""``mcip serve``: the HTTP API and search page over an index (registered by ``mcip.cli.build_parser``)."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    from mcip.errors import ConfigError
    from mcip.serve.server import run_server

    if args.max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}.")
    run_server(
        args.index,
        host=args.host,
        port=args.port,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        device=args.device,
        log_level=args.log_level,
    )
    return 0


def add_serve_command(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP API and search page over an index: text, image and click-to-search queries",
        description="Serve an index built with 'mcip index build': GET/POST /search, GET /images/{id}, "
        "GET /health, the search page at / and the API docs at /docs.",
    )
    p.add_argument("--index", required=True, help="index folder (from mcip index build)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)"
    )
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0: any free port (printed)")
    p.add_argument(
        "--max-upload-mb", type=float, default=10.0, help="largest image upload accepted (default 10 MiB)"
    )
    p.add_argument("--device", default="cpu", help="torch device of the query encoder (default: cpu)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)
