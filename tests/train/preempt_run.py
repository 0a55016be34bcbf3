"""``mcip train`` in a subprocess for the preemption tests.

``python -m tests.train.preempt_run [--sleep S] -- TRAIN_ARGS...`` runs ``mcip train TRAIN_ARGS``
and exits with its status. ``--sleep`` pauses S seconds after every optimizer step (numerics unchanged),
so that a test can signal the run while it is still training.
"""

from __future__ import annotations

import argparse
import sys
import time


def _slow_down(seconds: float) -> None:
    from mcip.engine import trainer

    after_step = trainer.Trainer._after_step

    def slow(self) -> None:
        after_step(self)
        time.sleep(seconds)

    trainer.Trainer._after_step = slow


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.sleep:
        _slow_down(args.sleep)
    from mcip.cli import main as mcip_main

    rest = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    sys.exit(mcip_main(["train", *rest]))


if __name__ == "__main__":
    main()
