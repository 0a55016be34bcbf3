"""What several ``mcip`` commands share: model options, precision choices, the parser class that also
holds word-named sub-commands, and the error handling that turns a library error into an exit status."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from mcip.errors import MCIPError
from mcip.models.precision import WEIGHT_PRECISIONS

Command = Callable[[argparse.Namespace], int]
PRECISIONS = list(WEIGHT_PRECISIONS)  # a model's weights dtype: fp32, bf16, fp16
DEVICE_HELP = "torch device, e.g. cpu or cuda (default: cpu)"
COMPILE_HELP = (
    "run the image tower through torch.compile: 10 to 40 s to compile first, then a faster forward pass "
    "(1.73x for the lab's model on 2 CPU cores, where decoding still bounds the whole job); for large "
    "collections. Falls back to the plain model, with a warning, where compiling fails"
)


def default_workers() -> int:
    """Image-decoding processes for encoding: one core is left to the model, at most 4."""
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def add_device_arg(p: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    p.add_argument("--device", default="cpu", help=help)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision`` and ``--drop-projector``: how a command loads its model."""
    add_device_arg(p)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="weights dtype")
    p.add_argument(
        "--drop-projector",
        action="store_true",
        help="use pre-projector image features as the embedding (ICMR'23 variant)",
    )


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that may also hold sub-commands named by their first word, next to its own
    positional arguments: ``mcip eval MODEL...`` and ``mcip eval embeddings --protocol ...`` (argparse's
    sub-parsers cannot share a parser with a positional ``nargs='+'``). Every ``mcip`` command parser is
    one; without sub-commands it is a plain ``ArgumentParser``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, Callable[[str], argparse.ArgumentParser]] = {}

    def add_command(self, name: str, build: Callable[[str], argparse.ArgumentParser]) -> None:
        """Register ``PROG NAME``: ``build(prog)`` makes its parser when the word is given (so that its
        choices may come from a library module without importing it for every command)."""
        self.commands[name] = build

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0] in self.commands:  # its own parse_args: its usage and errors name it
            parser = self.commands[args[0]](f"{self.prog} {args[0]}")
            return parser.parse_args(args[1:], namespace), []
        return super().parse_known_args(args, namespace)


@contextlib.contextmanager
def silenced_progress_bars(quiet: bool = True):
    """While inside, every tqdm bar of this process starts disabled unless its caller enables it
    explicitly, and child processes get ``TQDM_DISABLE=1`` (tqdm reads it when imported); restored after."""
    if not quiet:
        yield
        return
    from functools import partialmethod

    from tqdm import std

    init, env = std.tqdm.__init__, os.environ.get("TQDM_DISABLE")
    std.tqdm.__init__ = partialmethod(init, disable=True)
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        std.tqdm.__init__ = init
        if env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = env


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.func(args)``: a user-facing error (``MCIPError``) exits 2 with its message, an interrupted
    training run 128 + its signal (``TrainingInterrupted``), Ctrl-C elsewhere 130. ``--quiet`` silences
    every progress bar of the command, not only the ones its own code draws (:func:`silenced_progress_bars`).
    """
    try:
        with silenced_progress_bars(getattr(args, "quiet", False)):
            return int(args.func(args))
    except MCIPError as exc:
        print(f"mcip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # mcip.engine.preempt.TrainingInterrupted: 128 + its signal, once
        if getattr(exc, "rank", 0) == 0:
            print(f"mcip {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_status", 130)


def print_run_result(result, command: str) -> None:
    """What ``mcip lab run`` and ``mcip fit`` print at the end: the table, the reading, the search demo,
    the files written and the time."""
    print()
    print(result.table)
    print(result.reading)
    print()
    print(result.search)
    for name, path in result.files.items():
        print(f"{name:>9}: {path}")
    print(f"{command}: finished in {result.seconds / 60:.1f} min")
