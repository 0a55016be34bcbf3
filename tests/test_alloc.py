"""mcip._alloc: the allocator settings the command line applies (glibc), and the opt-out."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = "from mcip._alloc import tune_malloc; print(tune_malloc())"


def _run(env_extra: dict) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env_extra
    return subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuning_applies_on_glibc_and_yields_to_the_user():
    assert _run({}) == "True"
    assert _run({"MCIP_MALLOC_TUNING": "0"}) == "False"
    assert _run({"MALLOC_MMAP_THRESHOLD_": "65536"}) == "False"  # the user's own glibc setting wins


def test_the_command_line_applies_it(monkeypatch):
    import mcip._alloc as alloc
    from mcip.cli import main

    calls = []
    monkeypatch.setattr(alloc, "tune_malloc", lambda: calls.append(1) or True)
    assert main(["models"]) == 0
    assert calls == [1]


FAULTS = """
import resource, sys
from mcip._alloc import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tuned" else False
import numpy as np
def once():
    a = np.ones(64 * 2**20 // 8)  # 64 MiB: above glibc's largest mmap threshold
    del a
once()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    once()
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) // 10)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_malloc_reuses_freed_large_blocks_instead_of_faulting_them_in_again():
    """A 64 MiB block allocated, written and freed ten times: with glibc's defaults every round maps new
    zero pages (16,384 minor faults of 4 KiB, or 32+ of 2 MiB where numpy asks for huge pages); tuned, the
    heap keeps the block and a round faults ~none."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    rounds = {}
    for mode in ("default", "tuned"):
        out = subprocess.run(
            [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        rounds[mode] = int(out[1])
    assert rounds["default"] >= 32  # at least 64 MiB / 2 MiB fresh pages per round
    assert rounds["tuned"] * 10 < rounds["default"] and rounds["tuned"] < 100
