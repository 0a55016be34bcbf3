"""``tools/probe_bad_inputs.py``'s malformed command lines end with a message, never a traceback: the cases of
``mcip index``, ``search`` and ``serve`` in-process in the quick loop (a traceback there is an exception
other than SystemExit leaving ``main``), every case of the tool in its own process under ``-m slow``.

Four used to end in a traceback: ``index remove --ids <a folder>`` (IsADirectoryError), ``serve
--max-upload-mb nan`` / ``inf`` (ValueError / OverflowError) and ``serve --api-key-file <not UTF-8>``
(UnicodeDecodeError); running the tool found a fifth, ``train <a config with a YAML syntax error>``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mcip.cli import main

TOOL = Path(__file__).resolve().parents[2] / "tools" / "probe_bad_inputs.py"
QUICK = ("index", "search", "serve")  # the command groups run in-process in the quick loop


def _tool():
    spec = importlib.util.spec_from_file_location("probe_bad_inputs", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("probe_bad_inputs", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def probe(model_dir, tmp_path_factory):
    """The tool, its inputs, the test model and a tiny index of it."""
    tool = _tool()
    root = tmp_path_factory.mktemp("probe")
    _, index, inputs = tool.prepare(root, str(model_dir))
    return tool, index, inputs


def _quick_cases(model_dir, probe) -> list[list[str]]:
    tool, index, inputs = probe
    yaml = ["train", str(inputs["yaml_bad"])]  # a YAML syntax error (it was a traceback too)
    return [c for c in tool.cases(str(model_dir), index, inputs) if c[0] in QUICK or c == yaml]


def test_the_probe_holds_the_four_former_tracebacks(model_dir, probe):
    shown = [" ".join(c) for c in _quick_cases(model_dir, probe)]
    for needle in ("--ids", "--max-upload-mb nan", "--max-upload-mb inf", "keys-latin1.txt", "bad.yaml"):
        assert any(needle in s for s in shown), needle


def test_index_search_and_serve_bad_inputs_exit_with_a_message(
    model_dir, probe, tmp_path, monkeypatch, capsys
):
    import uvicorn

    def refuse(*args, **kwargs):
        raise AssertionError("a bad command line started a server")

    monkeypatch.setattr(uvicorn.Server, "run", refuse)
    monkeypatch.chdir(tmp_path)
    failures = []
    for argv in _quick_cases(model_dir, probe):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage error
            code = exc.code
        except Exception as exc:  # what a user would see as a traceback
            failures.append(f"mcip {' '.join(argv)}: {type(exc).__name__}: {exc}")
            continue
        err = capsys.readouterr().err
        if code in (0, None) or not err.strip():
            failures.append(f"mcip {' '.join(argv)}: exit {code} with stderr {err[-200:]!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_every_probe_case_ends_without_a_traceback(model_dir):
    results = _tool().run_all(jobs=2, model=str(model_dir))
    assert len(results) >= 60
    tracebacks = [shown for shown, _, traceback in results if traceback]
    assert tracebacks == []
