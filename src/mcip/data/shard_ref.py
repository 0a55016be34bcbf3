"""References to one sample inside a webdataset tar shard: ``SHARD.tar#KEY``.

A record read from shards has ``path = Path("/data/shard-000003.tar#000003117")``: the shard, a ``#`` and
the sample key (the member names up to the first dot of their base name). Everything that opens images
by path (:func:`mcip.data.images.open_image`) reads that sample's image member instead of a file, so
training by record, caption retrieval, indexing and ``mcip serve`` work on shards as on files.

Reading a member seeks to it: the member offsets of a shard are listed once per process (a small
least-recently-used table of shards) and then each read is one ``seek`` + ``read`` (for an uncompressed
tar; a compressed one is read through ``tarfile``, which decompresses up to the member).
"""

from __future__ import annotations

import os
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

SEPARATOR = "#"
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_REF = re.compile(
    r"^(?P<shard>.+(?:\.tar|\.tar\.gz|\.tgz|\.tar\.bz2|\.tar\.xz))#(?P<key>[^#]+)$", re.IGNORECASE
)
_CACHED_SHARDS = 32

# shard -> (stat signature, compressed, {key: {ext: (offset_data, size)}})
_members: OrderedDict[str, tuple[tuple[int, int], bool, dict[str, dict[str, tuple[int, int]]]]] = (
    OrderedDict()
)
_lock = threading.Lock()


def _after_fork_in_child() -> None:  # a fork while another thread held the lock would leave it held
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def member_ref(shard: str | os.PathLike, key: str) -> Path:
    """``Path("SHARD#KEY")``: the reference to sample ``key`` of ``shard``."""
    return Path(f"{os.fspath(shard)}{SEPARATOR}{key}")


def split_member_ref(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(shard, key)`` of a reference ``SHARD.tar#KEY``, or None for any other path."""
    if not isinstance(path, str | os.PathLike):
        return None
    m = _REF.match(os.fspath(path))
    return (Path(m["shard"]), m["key"]) if m else None


def split_key(name: str) -> tuple[str, str]:
    """``"dir/000001.seg.json"`` -> ``("dir/000001", "seg.json")`` (webdataset's rule)."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _is_compressed(shard: str) -> bool:
    try:
        with tarfile.open(shard, mode="r:"):
            return False
    except tarfile.ReadError:
        return True


def _list_members(shard: str) -> tuple[bool, dict[str, dict[str, tuple[int, int]]]]:
    compressed = _is_compressed(shard)
    members: dict[str, dict[str, tuple[int, int]]] = {}
    with tarfile.open(shard, mode="r:*" if compressed else "r:") as tar:
        for info in tar:
            if info.isfile():
                key, ext = split_key(info.name)
                members.setdefault(key, {})[ext] = (info.offset_data, info.size)
    return compressed, members


def _shard_members(shard: str) -> tuple[bool, dict[str, dict[str, tuple[int, int]]]]:
    st = os.stat(shard)
    signature = (int(st.st_size), int(st.st_mtime_ns))
    with _lock:
        cached = _members.get(shard)
        if cached is not None and cached[0] == signature:
            _members.move_to_end(shard)
            return cached[1], cached[2]
    compressed, members = _list_members(shard)
    with _lock:
        _members[shard] = (signature, compressed, members)
        while len(_members) > _CACHED_SHARDS:
            _members.popitem(last=False)
    return compressed, members


def member_exists(shard: str | os.PathLike, key: str) -> bool:
    """Whether ``shard`` is a readable tar holding sample ``key``."""
    try:
        return key in _shard_members(os.fspath(shard))[1]
    except (OSError, tarfile.TarError, EOFError):
        return False


def read_member(shard: str | os.PathLike, key: str, exts: Sequence[str]) -> tuple[str, bytes]:
    """``(ext, bytes)`` of sample ``key``'s first member whose extension is in ``exts``.

    Raises ``FileNotFoundError`` when the shard or the sample (or a member with one of ``exts``) is
    absent, ``OSError`` on a damaged shard (so decoding counts it as an unreadable image).
    """
    shard = os.fspath(shard)
    try:
        return _read(shard, key, exts)
    except (tarfile.TarError, EOFError) as exc:
        raise OSError(f"{shard}: unreadable shard: {type(exc).__name__}: {exc}") from exc


def _read(shard: str, key: str, exts: Sequence[str]) -> tuple[str, bytes]:
    compressed, members = _shard_members(shard)
    files = members.get(key)
    if files is None:
        raise FileNotFoundError(f"{shard} holds no sample {key!r}")
    ext = next((e for e in exts if e in files), None)
    if ext is None:
        raise FileNotFoundError(f"{shard}: sample {key!r} has no {'/'.join(exts)} member")
    offset, size = files[ext]
    if not compressed:
        with open(shard, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    else:
        with tarfile.open(shard, mode="r:*") as tar:
            tar.fileobj.seek(offset)
            data = tar.fileobj.read(size)
    if len(data) != size:
        raise OSError(f"{shard}: sample {key!r} is truncated ({len(data)} of {size} bytes)")
    return ext, data
