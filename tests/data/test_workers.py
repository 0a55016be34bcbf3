"""How DataLoader workers start (mcip.data.workers): the command line's fork server, the override, errors."""

from __future__ import annotations

import multiprocessing

import pytest

from mcip.data import workers
from mcip.errors import ConfigError


@pytest.fixture(autouse=True)
def _interpreter_default(monkeypatch):
    monkeypatch.delenv(workers.ENV, raising=False)
    workers.use_forkserver(False)
    yield
    workers.use_forkserver(False)


def test_library_code_keeps_the_interpreters_default():
    assert workers.start_method() is None
    assert workers.worker_context(2) is None


def test_the_command_line_starts_workers_from_a_fork_server(capsys):
    from mcip.cli import main

    assert main([]) == 0  # no command: prints the help, after the process-wide setup
    assert workers.start_method() == "forkserver"
    context = workers.worker_context(2)
    assert context is not None and context.get_start_method() == "forkserver"
    assert workers.worker_context(0) is None  # in-process loading needs no context


def test_environment_overrides_both(monkeypatch):
    workers.use_forkserver()
    monkeypatch.setenv(workers.ENV, " Fork ")
    assert workers.worker_context(1).get_start_method() == "fork"
    monkeypatch.setenv(workers.ENV, "spawn")
    assert workers.start_method() == "spawn"


def test_bad_start_method_says_which_to_use(monkeypatch):
    monkeypatch.setenv(workers.ENV, "threads")
    with pytest.raises(ConfigError, match="fork, forkserver, spawn"):
        workers.start_method()


def test_the_fork_server_is_told_what_to_preload(monkeypatch):
    told = []
    monkeypatch.setitem(workers._state, "preloaded", False)
    monkeypatch.setattr(
        multiprocessing.context.ForkServerContext,
        "set_forkserver_preload",
        lambda self, names: told.append(names),
    )
    workers.use_forkserver()
    workers.worker_context(2)
    workers.worker_context(2)
    assert told == [list(workers.PRELOAD)]  # once: the server reads it when it starts
