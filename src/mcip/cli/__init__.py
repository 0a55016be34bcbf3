"""``mcip <command>``: a thin shell. Each command parses arguments and calls one library function.

One module per command group, each with ``register(subparsers)`` and its ``cmd_*`` functions; what they
share (model options, the parser class, the error handling) is in ``_common``. Only this package knows
the command line: library functions take typed arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mcip.cli import (
    captions,
    data,
    encode,
    evaluate,
    export,
    fit,
    index,
    lab,
    merge,
    models,
    search,
    serve,
    train,
)
from mcip.cli._common import CommandParser, run_command

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away
GROUPS = (models, train, evaluate, merge, captions, fit, lab, index, search, serve, encode, data, export)
"""The command groups, in the order ``mcip -h`` lists their commands."""


def build_parser() -> argparse.ArgumentParser:
    from mcip import __version__

    parser = argparse.ArgumentParser(
        prog="mcip",
        description="Fine-tune and use CLIP-style models whose single image embedding serves image search, "
        "k-NN and zero-shot classification and text search (Schall et al., SISAP 2024).",
    )
    parser.add_argument("--version", action="version", version=f"mcip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mcip ARGV``; returns the exit status. A reader that closes the pipe early (``mcip ... | head``)
    ends it quietly with 141 (128 + SIGPIPE), as Unix tools do, instead of a BrokenPipeError traceback."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # inside the try: buffered output meets a closed pipe here, not at exit
        return status
    except BrokenPipeError:
        try:  # Python flushes stdout again at exit: point it at devnull so that flush cannot fail
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file descriptor (e.g. captured in-process)
            pass
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    from mcip._alloc import tune_malloc
    from mcip.data.workers import use_forkserver

    tune_malloc()  # before any tensor exists: reuse freed blocks instead of mmap/munmap every step
    use_forkserver()  # DataLoader workers share no pages with the training process (mcip.data.workers)
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return 0
    return run_command(args)


__all__ = ["EXIT_BROKEN_PIPE", "GROUPS", "build_parser", "main", "run_command"]
