"""How DataLoader worker processes start: ``fork``, ``forkserver`` or ``spawn``.

With ``fork`` (Python's default on Linux up to 3.13) a worker is a copy of the process that starts it, and
its pages are shared copy-on-write with it: every page of the training process's heap that the training
process writes while the workers live is copied by the kernel first (a page fault, a 4 KiB copy, and a
TLB flush on every core the process's threads run on). A training process's heap is large (the model, the
optimizer state, the activations of a batch, reused from step to step) and it is rewritten every step, so
the first steps after the workers start pay for a copy of all of it, once per loader. Measured on
``mcip lab run --quick`` (2 cores; the training process's ``getrusage`` sampled every 0.5 s with its
stack): with ``fork``, 17 of its 26 s of system time and 1.4 of its 2.1 million minor faults fell in the
image towers' forward passes after each stage's workers started; with ``forkserver``, 6 s and 0.7 million
in all (``benchmarks/sys_time.py --lab-quick``, whole run with workers: system / user 0.184 -> 0.043).

``forkserver`` starts one clean server process once (it imports torch and mcip's datasets,
:data:`PRELOAD`), and every worker is forked from it, sharing nothing with the training process; the
dataset and collate function are pickled to each worker once (the loaders keep their workers for every
epoch). ``spawn`` starts every worker as a fresh interpreter (macOS's and Windows's default).

The ``mcip`` command line uses ``forkserver`` for the training loaders (:mod:`mcip.data.loader`) where the
platform has it (:func:`use_forkserver`; Python 3.14 made it Linux's default too). The encoders'
decoding workers (``mcip encode``, ``mcip index build``) keep the interpreter's default: their process
does not rewrite a large heap every step, and starting the server (a fresh interpreter importing torch)
cost more than it saved: ``benchmarks/encode.py --n 256`` under ``MCIP_WORKER_START=forkserver`` gave
``mcip encode`` 24 img/s against 43 with ``fork``, index build 38 against 46 (one run each, this
machine). Code that calls mcip's functions keeps its interpreter's default, because
``forkserver`` and ``spawn`` import the calling script's main module in every worker (a script needs an
``if __name__ == "__main__":`` guard). ``MCIP_WORKER_START=fork|forkserver|spawn`` overrides both.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import BaseContext

from mcip.errors import ConfigError

ENV = "MCIP_WORKER_START"
METHODS = ("fork", "forkserver", "spawn")
# imported once by the fork server, so that a worker forked from it starts with them loaded
PRELOAD = ("torch", "PIL.Image", "torchvision.transforms", "mcip.data.loader")
_state: dict[str, object] = {"default": None, "preloaded": False}


def use_forkserver(enable: bool = True) -> None:
    """Make ``forkserver`` this process's start method for mcip's worker processes (``enable=False``: the
    interpreter's default again); a no-op where the platform has no fork server."""
    _state["default"] = (
        "forkserver" if enable and "forkserver" in multiprocessing.get_all_start_methods() else None
    )


def start_method() -> str | None:
    """The start method mcip's loaders use: ``$MCIP_WORKER_START``, else the one :func:`use_forkserver`
    set, else None (the interpreter's default)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value:
        if value not in METHODS:
            raise ConfigError(
                f"{ENV}={os.environ[ENV]!r} is not a start method; use one of {', '.join(METHODS)}."
            )
        if value not in multiprocessing.get_all_start_methods():
            raise ConfigError(
                f"{ENV}={value} is not available on this platform (it has "
                f"{', '.join(multiprocessing.get_all_start_methods())}); unset it or pick one of those."
            )
        return value
    default = _state["default"]
    return default if isinstance(default, str) else None


def worker_context(num_workers: int) -> BaseContext | None:
    """The ``multiprocessing_context`` for a DataLoader with ``num_workers`` workers (None: in-process
    loading, or the interpreter's default start method)."""
    method = start_method() if num_workers > 0 else None
    if method is None:
        return None
    context = multiprocessing.get_context(method)
    if method == "forkserver" and not _state["preloaded"]:
        context.set_forkserver_preload(list(PRELOAD))  # read when the server starts (once per process)
        _state["preloaded"] = True
    return context
