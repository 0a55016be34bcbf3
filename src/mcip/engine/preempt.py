"""Stopping a training run cleanly on a signal: how schedulers preempt and time out jobs (SIGTERM;
SIGUSR1 with SLURM's ``--signal=USR1@SECONDS``) and Ctrl-C (SIGINT).

While :class:`StopSignals` is active, each of these signals only records that a stop was asked for.
The training loop (mcip.engine.loop) finishes the optimizer step it is in, every rank agrees to stop
after the same step (one tiny all-reduce per step), a checkpoint of that step is written atomically,
and :class:`TrainingInterrupted` is raised; ``mcip train`` then exits with 128 + the signal number
(143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1) after saying how to resume. A second Ctrl-C stops
at once (a plain KeyboardInterrupt). Schedulers wait a grace period before SIGKILL (SLURM: KillWait,
30 s by default; torchrun: 30 s), which must cover one step plus writing a checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopSignals", "TrainingInterrupted"]

log = logging.getLogger(__name__)

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")  # in this order of precedence when ranks disagree


def stop_signal_numbers() -> list[int]:
    """The numbers of :data:`STOP_SIGNALS` this platform has (Windows has no SIGUSR1)."""
    return [int(getattr(signal, name)) for name in STOP_SIGNALS if hasattr(signal, name)]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on signal ``signum`` after step ``step`` of ``total_steps``; ``checkpoint`` holds
    that step. A KeyboardInterrupt (not an Exception), so ``except Exception`` does not swallow it and
    code that handles Ctrl-C handles it. ``resume_command``: how to continue, shown in the message."""

    def __init__(self, signum: int, step: int, total_steps: int, checkpoint: Path, rank: int = 0) -> None:
        super().__init__(signum, step, total_steps, str(checkpoint))
        self.signum, self.step, self.total_steps = int(signum), step, total_steps
        self.checkpoint, self.rank = Path(checkpoint), rank
        self.resume_command = "train(..., resume=True) on the same run folder"

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number."""
        return 128 + self.signum

    def __str__(self) -> str:
        return (
            f"{self.signal_name} received: training stopped after step {self.step} of {self.total_steps} "
            f"and saved {self.checkpoint}. Resume with: {self.resume_command}"
        )


class StopSignals:
    """A context manager: while active (in the main thread), SIGTERM, SIGUSR1 and SIGINT set
    ``received`` (the first one's number) instead of ending the process; the previous handlers come
    back on exit. Another SIGINT after the first signal raises KeyboardInterrupt at once. Outside the
    main thread Python cannot install handlers: it installs none and ``received`` stays None."""

    def __init__(self) -> None:
        self.numbers = stop_signal_numbers()
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            log.debug("Not in the main thread: SIGTERM / SIGINT keep their handlers during training.")
            return self
        for number in self.numbers:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # no printing here: the main thread may be inside a write to the same stream (tqdm)
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum
