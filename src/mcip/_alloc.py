"""The C allocator's settings for training and encoding on CPU.

glibc's malloc serves every block above its mmap threshold (128 KiB at start, raised dynamically up to
32 MiB when such blocks are freed) with a fresh ``mmap`` and gives it back with ``munmap`` when freed; and it
trims the top of the heap back to the kernel whenever more than 128 KiB are free there. A training step
allocates and frees the same large activation and gradient tensors every step, so with these defaults each
step maps new zero pages and faults them in one 4 KiB page at a time, then unmaps them: the kernel time and
the hundreds of millions of minor page faults of a CPU run (``benchmarks/sys_time.py`` measures it).

:func:`tune_malloc` (called by the ``mcip`` command line before it does anything else) serves every block
from the heap (``M_MMAP_MAX`` 0: no per-block ``mmap``, which glibc would still use above its largest
threshold of 32 MiB, e.g. the first activations of a batch of 64 at 128 px) and stops trimming, so freed
blocks are reused by the next step; memory that was used once stays with the process (the peak, which a
training run reaches every step anyway). Set ``MCIP_MALLOC_TUNING=0`` to keep glibc's defaults;
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_MAX_`` set by the user win (glibc
reads them at start, and then this module changes nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 2**31 - 1  # the largest an int holds: the heap top is (in practice) never trimmed
ENV_SWITCH = "MCIP_MALLOC_TUNING"
_done: dict[str, bool] = {}


def tune_malloc() -> bool:
    """Apply the settings above once per process; True when they were applied (glibc on Linux, not
    switched off, not set by the user through glibc's own variables)."""
    if "applied" in _done:
        return _done["applied"]
    applied = False
    if (
        sys.platform.startswith("linux")
        and os.environ.get(ENV_SWITCH, "1") != "0"
        and not {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_"} & set(os.environ)
    ):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (musl has no mallopt)
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            ok &= mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            ok &= mallopt(M_MMAP_MAX, 0) == 1
            applied = bool(ok)
    _done["applied"] = applied
    return applied
