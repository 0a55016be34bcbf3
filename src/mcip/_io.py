"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of one.

Every helper writes a hidden temporary sibling (same folder, so the rename is atomic on POSIX), fsyncs
what it wrote, renames it over the target and fsyncs the parent folder so that the rename itself survives
a power cut. On an exception the temporary is removed and the target is left as it was. The parent folder
must exist (as with ``open``); permissions follow the umask, as with ``open`` and ``mkdir``.

- :func:`atomic_open`: a file handle (``"wb"`` or ``"w"``) for writers that stream (``torch.save``,
  ``tarfile``, ``np.save``, ``PIL.Image.save``);
- :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json`: a whole file at once;
- :func:`atomic_dir`: a whole folder, built in a temporary sibling and swapped in;
- :func:`replace_dir`: the swap alone, for writers that build their folder elsewhere (the index).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_TEXT_MODES = ("w", "wt")
_BINARY_MODES = ("wb",)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Persist the entries of ``folder`` (a rename into it), best effort: not every OS opens folders."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file under ``folder``, then every folder (deepest first), then ``folder`` itself."""
    folders = []
    for parent, _, files in os.walk(folder):
        folders.append(parent)
        for name in files:
            path = os.path.join(parent, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for parent in reversed(folders):
        fsync_dir(parent)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new hidden ``.NAME.RANDOM.tmp`` next to ``path``, opened for writing (``O_EXCL``: never shared)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "wb", encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on leaving the block, fsync it and rename it over
    ``path`` (then fsync the folder). An exception inside the block removes it and leaves ``path`` alone.

    ``mode``: ``"wb"`` (default) or ``"w"`` / ``"wt"`` (text, with ``encoding`` and ``newline`` as for
    ``open``).
    """
    if mode not in _TEXT_MODES + _BINARY_MODES:
        raise ValueError(
            f"atomic_open writes a whole new file: mode must be 'wb', 'w' or 'wt', not {mode!r}."
        )
    path = Path(path)
    fd, tmp = _create_temp(path)
    try:
        handle = os.fdopen(fd, mode, encoding=encoding, newline=newline)
    except BaseException:  # e.g. an unknown encoding (io.open has closed the descriptor)
        os.unlink(tmp)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns ``path``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, as ``Path.write_text`` would; returns ``path``."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, **json_kw: Any) -> Path:
    """Write ``json.dumps(obj, **json_kw)`` (UTF-8, no trailing newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, **json_kw))


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike, old: str | os.PathLike | None = None) -> None:
    """Put folder ``src`` at ``dst`` by renaming, after fsyncing everything in it.

    An existing ``dst`` is first renamed to ``old`` (default: the hidden sibling ``.NAME.old``), then
    removed once ``src`` is in place; a crash between the two renames leaves the previous version at
    ``old``, complete. ``src`` and ``dst`` must be on one file system (siblings are). A symlink at
    ``dst`` is never replaced: the folder it points to is (resolve ``dst`` before building ``src``, so
    that ``src`` sits next to the real folder).
    """
    src, dst = Path(src), Path(dst)
    if dst.is_symlink():
        dst = Path(os.path.realpath(dst))
    fsync_tree(src)
    if dst.exists():
        old = Path(old) if old is not None else dst.with_name(f".{dst.name}.old")
        _remove(old)
        os.replace(dst, old)
        os.replace(src, dst)
        _remove(old)
    else:
        os.replace(src, dst)
    fsync_dir(dst.parent)


def _remove(path: Path) -> None:
    """Delete ``path`` if anything is there: a folder with its contents, or a file or symlink itself."""
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def temp_dir_for(path: str | os.PathLike) -> Path:
    """A new empty hidden sibling folder ``.NAME.tmp-RANDOM`` of ``path``, for building its next version;
    its permissions follow the umask, like ``mkdir``'s (it becomes ``path``)."""
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling (yielded) and swap it in at ``path`` on success.

    Leaving the block fsyncs every file and folder written and renames the folder into place (an
    existing ``path`` is replaced, see :func:`replace_dir`); an exception removes the temporary folder and
    leaves ``path`` as it was.

    >>> with atomic_dir(out / "model") as tmp:  # doctest: +SKIP
    ...     (tmp / "weights.bin").write_bytes(data)
    """
    path = Path(os.path.realpath(path))  # a symlink stays: the folder it points to is replaced
    tmp = temp_dir_for(path)
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
