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
