"""One writer per index: an exclusive ``flock`` on ``.NAME.lock`` next to the index folder ``NAME``.

Every command that writes an index (``build_index``, ``add_to_index``, ``index_embeddings``) holds the
lock from before it reads the index until the new version is swapped in, so two writers never share the
staging folder and an add never appends to a version another writer is replacing. Readers (search,
serve, info, check) do not take it: the swap keeps every version they can see complete.

The lock file lives next to the folder, not inside it, because a write replaces the folder by renaming
(a lock inside would move away with the old version while a second writer locks a fresh file). The file
stays after a write (deleting it would let two writers lock two different files) and holds, while the lock
is held, a small JSON of the holder: ``{"pid", "host", "command", "since"}``, which a refused writer shows.

Stale locks: the kernel releases a ``flock`` when every descriptor of it is closed, i.e. when the holder
exits, however it dies (kill -9 included). A lock file left by a dead writer therefore still holds its
JSON but no lock, and the next writer takes it over and overwrites the JSON. If the lock is busy but the
recorded pid is gone, a child the writer forked (an image-decoding worker) still holds the descriptor;
the message says so, and the lock frees itself when that child exits (``--wait`` rides it out).
``flock`` on network file systems depends on the server; keep indexes that several hosts write on a
local disk, or serialise the writers yourself.

One index, one name: every path is resolved first (:func:`real_index_dir`: symlinks and ``..`` followed),
so ``link.index -> base.index`` and ``sub/../base.index`` lock ``.base.index.lock``, stage in
``.base.index.staging`` and swap ``base.index`` itself (the symlink stays a symlink).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mcip.errors import ConfigError, MCIPError

POLL_SECONDS = 0.2
_held: dict[str, tuple[int, int]] = {}  # lock path -> (thread id, depth): re-entry by the holding thread
_held_guard = threading.Lock()


class IndexBusyError(MCIPError, RuntimeError):
    """Another process is writing the index; the message names it and how to wait for it."""


def real_index_dir(index_dir: str | os.PathLike) -> Path:
    """``index_dir`` with every symlink and ``..`` resolved (``os.path.realpath``; it need not exist):
    the one name under which an index is locked, staged and swapped, whichever spelling reached it."""
    return Path(os.path.realpath(index_dir))


def lock_path(index_dir: str | os.PathLike) -> Path:
    """``.NAME.lock`` in the folder holding the index ``NAME`` (after :func:`real_index_dir`)."""
    index_dir = real_index_dir(index_dir)
    return index_dir.with_name(f".{index_dir.name}.lock")


def holds_lock(index_dir: str | os.PathLike) -> bool:
    """True if the calling thread holds the write lock of ``index_dir`` (under any of its spellings)."""
    entry = _held.get(str(lock_path(index_dir)))
    return entry is not None and entry[0] == threading.get_ident()


def read_holder(path: Path) -> dict:
    """The holder JSON of a lock file; ``{}`` if it is empty, unreadable or half written."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe_holder(holder: dict) -> str:
    """``pid 123 (mcip index add ...) on host h since 2025-01-01T00:00:00+00:00``, or what is known."""
    if not holder:
        return "another process (its details are not written yet)"
    text = f"pid {holder.get('pid')} ({holder.get('command', '?')})"
    if holder.get("host") != socket.gethostname():
        text += f" on host {holder.get('host')}"
    elif not _alive(holder.get("pid")):
        text += (
            ", which is no longer running; a process it started (e.g. an image-decoding worker) still holds "
            "the lock and releases it when it exits"
        )
    return text + f", since {holder.get('since', '?')}"


def _busy(index_dir: Path, path: Path, wait: float) -> IndexBusyError:
    waited = f"after waiting {wait:g} s " if wait > 0 else ""
    return IndexBusyError(
        f"{index_dir} is being written by {describe_holder(read_holder(path))}; {waited}giving up. One "
        "writer at a time: let it finish, or rerun with --wait [SECONDS] (library: wait=SECONDS) to queue "
        f"behind it. The lock is {path}; it frees itself when the holder exits, so never delete it by hand."
    )


def _try_lock(path: Path) -> int | None:
    """A descriptor holding the exclusive lock on ``path``, or None if another one holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)  # the umask decides who may write
    except PermissionError:  # another user's lock file: flock works on a read-only descriptor too
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    try:  # the file was replaced or deleted between open and flock: lock the one at the path instead
        same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_lock(path)
    return fd


def _acquire(index_dir: Path, path: Path, wait: float) -> int:
    deadline = time.monotonic() + wait
    while True:
        fd = _try_lock(path)
        if fd is not None:
            return fd
        if time.monotonic() >= deadline:
            raise _busy(index_dir, path, wait)
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _write_holder(fd: int, command: str) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):  # best effort: a read-only lock file still locks
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)


def _command() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    program = "mcip" if program in ("cli.py", "__main__.py") else program  # python -m mcip.cli
    text = " ".join([program, *sys.argv[1:]])
    return text if len(text) <= 300 else text[:297] + "..."


@contextmanager
def index_lock(index_dir: str | os.PathLike, wait: float = 0.0, command: str | None = None) -> Iterator[Path]:
    """Hold the write lock of ``index_dir`` (creating its parent folder) for the ``with`` block.

    Args:
        wait: seconds to wait for another writer (0: fail at once; ``math.inf``: as long as it takes).
        command: what the holder JSON says this process is doing (default: its command line).

    Raises:
        IndexBusyError: another writer still holds it after ``wait`` seconds (the message names it).

    Re-entrant for the thread that holds it; other threads and processes are excluded.
    """
    if not (wait >= 0):  # also refuses NaN
        raise ConfigError(f"wait must be a number of seconds >= 0 (or inf), got {wait!r}.")
    path = lock_path(index_dir)
    key = str(path)
    if holds_lock(index_dir):
        yield from _reenter(key, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(Path(index_dir), path, float(wait))
    try:
        _write_holder(fd, command or _command())
        with _held_guard:
            _held[key] = (threading.get_ident(), 1)
        yield path
    finally:
        with _held_guard:
            _held.pop(key, None)
        with contextlib.suppress(OSError):  # no holder any more; the file stays (module docstring)
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the flock


def _reenter(key: str, path: Path) -> Iterator[Path]:
    with _held_guard:
        tid, depth = _held[key]
        _held[key] = (tid, depth + 1)
    try:
        yield path
    finally:
        with _held_guard:
            tid, depth = _held[key]
            _held[key] = (tid, depth - 1)
