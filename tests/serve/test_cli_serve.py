"""``mcip serve``: registration, argument errors (exit 2), and the real command in a subprocess."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from mcip.cli import build_parser, main


def test_serve_is_registered_with_defaults():
    args = build_parser().parse_args(["serve", "--index", "idx"])
    assert args.command == "serve" and args.index == "idx"
    assert (args.host, args.port, args.max_upload_mb, args.device) == ("127.0.0.1", 8000, 10.0, "cpu")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
        (["--max-upload-mb", "nan"], "--max-upload-mb must be positive and finite"),  # was a ValueError
        (["--max-upload-mb", "inf"], "--max-upload-mb must be positive and finite"),  # was an OverflowError
        (["--port", "70000"], "between 0 and 65535"),
    ],
)
def test_bad_arguments_exit_2(index_dir, capsys, argv, message):
    assert main(["serve", "--index", str(index_dir), *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_index_exits_2(tmp_path, capsys):
    assert main(["serve", "--index", str(tmp_path / "nothing"), "--port", "0"]) == 2
    assert "not an mcip index" in capsys.readouterr().err


def test_busy_port_exits_2(index_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--index", str(index_dir), "--port", str(port)]) == 2
    assert "Cannot listen on 127.0.0.1" in capsys.readouterr().err


@pytest.mark.slow
def test_mcip_serve_command_serves_the_index(index_dir, search_index):
    """The installed command end to end: a fresh process loads the index's model from its directory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "mcip.cli", "serve", "--index", str(index_dir), "--port", "0"]
    command += ["--log-level", "warning"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines, match = [], None
        for line in proc.stdout:  # warnings may come first; ends at EOF if the process dies
            lines.append(line)
            if match := re.search(r"serving .* at (http://127\.0\.0\.1:\d+)/", line):
                break
        assert match, "".join(lines)
        url = match.group(1)
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(url + "/health", timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "the server did not answer"
                time.sleep(0.2)
        assert health["count"] == len(search_index)
        body = httpx.get(url + "/search", params={"text": "a red emoji", "k": 3}, timeout=30).json()
        expected = search_index.search(text="a red emoji", k=3)
        assert [(r["id"], round(r["score"], 5)) for r in body["results"]] == [
            (h.id, round(h.score, 5)) for h in expected
        ]
    finally:
        proc.terminate()
        proc.wait(30)
