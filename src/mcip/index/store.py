"""The on-disk layout of an index folder, written atomically and read lazily.

::

    INDEX_DIR/
      manifest.json          format, model identity (spec, fingerprints, dim), backend, counts, history
      embeddings.f16.npy     (N, D) float16 L2-normalised image embeddings (memory-mapped when read)
      records.jsonl          row i: {"id", "path", "label", "captions", ...manifest extras}
      records.offsets.npy    (N + 1,) int64 byte offsets of the rows of records.jsonl
      columns.json           {"ids", "paths", "labels", "plain"}: per row, in row order (plain: the row
                             has no captions and no extra fields, so search hits need not parse its line)
      faiss.index | qdrant/  the backend's files

A build writes a sibling ``.INDEX_DIR.tmp-*`` folder and swaps it in with two renames; the previous
folder waits at ``.INDEX_DIR.old`` in between, and :func:`recover` puts it back if a crash fell between
the renames. So a reader always finds a complete index, old or new. Writers hold the lock
``.INDEX_DIR.lock`` (``mcip.index.lock``) for the whole write; ``.INDEX_DIR.staging`` keeps the rows an
interrupted build encoded.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mcip._io import atomic_write_json, replace_dir, temp_dir_for
from mcip.errors import InputError
from mcip.index.lock import IndexBusyError, holds_lock, index_lock, real_index_dir
from mcip.index.records import HASH_FIELD, STAT_FIELD, IndexRecord

_raw_decode = json.JSONDecoder().raw_decode
FORMAT = "mcip-index"
VERSION = 1
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.f16.npy"
RECORDS = "records.jsonl"
OFFSETS = "records.offsets.npy"
COLUMNS = "columns.json"
RECOVER_WAIT_SECONDS = 10.0


def _old_dir(index_dir: str | os.PathLike) -> Path:
    index_dir = real_index_dir(index_dir)
    return index_dir.with_name(f".{index_dir.name}.old")


def staging_dir(index_dir: str | os.PathLike) -> Path:
    """Where an interrupted build or add keeps its encoded rows (next to the index, found again on resume;
    symlinks resolved, like the lock: ``mcip.index.lock.real_index_dir``)."""
    index_dir = real_index_dir(index_dir)
    return index_dir.with_name(f".{index_dir.name}.staging")


def _needs_recovery(index_dir: Path) -> bool:
    return not real_index_dir(index_dir).exists() and (_old_dir(index_dir) / MANIFEST).is_file()


def recover(index_dir: str | os.PathLike, wait: float = RECOVER_WAIT_SECONDS) -> None:
    """Put the previous index back if a crash left it at ``.NAME.old`` with nothing at ``NAME``.

    Only under the write lock: while a writer holds it, ``.NAME.old`` with nothing at ``NAME`` is that
    writer between its two renames (or about to recover itself), so a reader waits up to ``wait`` seconds
    for ``NAME`` to reappear instead of moving the old version back under the writer's feet.
    """
    index_dir = Path(index_dir)
    if not _needs_recovery(index_dir):
        return
    if holds_lock(index_dir):
        os.replace(_old_dir(index_dir), real_index_dir(index_dir))
        return
    deadline = time.monotonic() + wait
    while _needs_recovery(index_dir):
        try:
            with index_lock(index_dir, command="recover an interrupted index write"):
                if _needs_recovery(index_dir):
                    os.replace(_old_dir(index_dir), real_index_dir(index_dir))
            return
        except IndexBusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def new_temp_dir(index_dir: Path) -> Path:
    """An empty sibling folder for the next version of ``index_dir`` (same file system: rename works).
    Leftovers of crashed writes are removed first (the caller holds the write lock: no other writer's)."""
    index_dir = real_index_dir(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in index_dir.parent.glob(f".{index_dir.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return temp_dir_for(index_dir)


def swap_into_place(tmp: Path, index_dir: Path) -> None:
    """Replace ``index_dir`` (its real folder: a symlink to it stays) by ``tmp`` (two renames;
    :func:`recover` repairs a crash in between)."""
    replace_dir(tmp, real_index_dir(index_dir), _old_dir(index_dir))


def write_json(path: Path, data: dict) -> None:
    atomic_write_json(path, data, indent=2)


def read_manifest(index_dir: str | os.PathLike) -> dict:
    """The manifest of ``index_dir``; a clear error if the folder is not an mcip index."""
    index_dir = Path(index_dir)
    recover(index_dir)
    path = index_dir / MANIFEST
    if not path.is_file():
        what = "does not exist" if not index_dir.exists() else f"has no {MANIFEST}"
        raise InputError(
            f"{index_dir} is not an mcip index ({what}); build one with: "
            f"mcip index build --model MODEL --images DIR --out {index_dir}"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not an mcip index manifest (format={manifest.get('format')!r}).")
    if int(manifest.get("version", 0)) > VERSION:
        raise InputError(
            f"{index_dir} was written by a newer mcip (index format {manifest['version']}); upgrade mcip."
        )
    return manifest


def write_records(folder: Path, records: Iterable[IndexRecord], copy_from: Path | None = None) -> list[str]:
    """Write ``records.jsonl``, its offsets and ``columns.json`` into ``folder`` (after the records of the
    index ``copy_from``, if given); return all ids in row order."""
    columns: dict[str, list] = {"ids": [], "paths": [], "labels": [], "plain": []}
    offsets = [0]
    if copy_from is not None:
        shutil.copyfile(copy_from / RECORDS, folder / RECORDS)
        columns = json.loads((copy_from / COLUMNS).read_text())
        offsets = np.load(copy_from / OFFSETS).tolist()
    with open(folder / RECORDS, "ab") as f:
        for record in records:
            line = (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode()
            f.write(line)
            offsets.append(offsets[-1] + len(line))
            columns["ids"].append(record.id)
            columns["paths"].append(str(record.path))
            columns["labels"].append(record.label)
            columns["plain"].append(not record.captions and not record.extra)  # content_hash: not metadata
    np.save(folder / OFFSETS, np.asarray(offsets, dtype=np.int64))
    (folder / COLUMNS).write_text(json.dumps(columns, ensure_ascii=False))
    return columns["ids"]


class RowReader:
    """What a search hit reads from an index's records: the id, path and label columns in memory, and
    the lines of ``records.jsonl`` (memory-mapped; a line is parsed only for rows with captions or extra
    fields). Hits built after their index closed keep it alive: the map closes with its last reader."""

    __slots__ = ("_offsets", "_records", "ids", "labels", "paths", "plain")

    def __init__(self, ids: list, paths: list, labels: list, plain: list, offsets: list, records) -> None:
        self.ids, self.paths, self.labels, self.plain = ids, paths, labels, plain
        self._offsets, self._records = offsets, records

    def row_json(self, row: int) -> dict:
        """The JSON object of ``row``: ``{"id", "path", "label", "captions", ...}`` (a fresh dict)."""
        lo, hi = self._offsets[row], self._offsets[row + 1]
        return _raw_decode(self._records[lo:hi].decode())[0]

    def metadata(self, row: int) -> dict:
        """``{"label", "captions", ...extras}`` of ``row`` (a fresh dict)."""
        if self.plain[row]:
            return {"label": self.labels[row], "captions": []}
        meta = self.row_json(row)
        del meta["id"], meta["path"]
        meta.pop(HASH_FIELD, None)
        meta.pop(STAT_FIELD, None)
        return meta


class StoredIndex:
    """The read side of an index folder: manifest, embeddings (memory-mapped), ids, lazily parsed records.

    Safe to read from several threads.
    """

    def __init__(self, index_dir: str | os.PathLike) -> None:
        self.dir = Path(index_dir)
        self.manifest = read_manifest(self.dir)
        self.embeddings: np.ndarray = np.load(self.dir / EMBEDDINGS, mmap_mode="r")
        columns = json.loads((self.dir / COLUMNS).read_text())
        self.ids: list[str] = columns["ids"]
        self.paths: list[str] = columns["paths"]
        self.labels: list[str] = [sys.intern(label) for label in columns["labels"]]
        self.plain: list[bool] = columns["plain"]
        self.offsets = np.load(self.dir / OFFSETS)
        self.row_of = {rec_id: row for row, rec_id in enumerate(self.ids)}
        self._columns: dict[str, list] = {}
        count = int(self.manifest["count"])
        if not (len(self.ids) == len(self.offsets) - 1 == self.embeddings.shape[0] == count):
            raise InputError(
                f"{self.dir} is inconsistent ({count} in the manifest, {len(self.ids)} ids, "
                f"{self.embeddings.shape[0]} embeddings); rebuild it with mcip index build."
            )
        with open(self.dir / RECORDS, "rb") as f:  # the map keeps its own handle
            size = os.fstat(f.fileno()).st_size
            records = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        # Python ints as offsets: no numpy scalar per lookup
        self.reader = RowReader(self.ids, self.paths, self.labels, self.plain, self.offsets.tolist(), records)

    def __len__(self) -> int:
        return len(self.ids)

    def record(self, row: int) -> IndexRecord:
        """The record at ``row`` (0-based), parsed from its line."""
        return IndexRecord.from_json(self.row_json(row))

    def row_json(self, row: int) -> dict:
        """The JSON object of ``row``: ``{"id", "path", "label", "captions", ...}`` (a fresh dict)."""
        return self._open_reader().row_json(row)

    def metadata(self, row: int) -> dict:
        """``{"label", "captions", ...extras}`` of ``row`` (a fresh dict; lines are parsed only when needed)."""
        return self._open_reader().metadata(row)

    def _open_reader(self) -> RowReader:
        if self.reader is None:
            raise InputError(f"The index {self.dir} was closed; open it again to read its records.")
        return self.reader

    def column(self, key: str) -> list:
        """The value of field ``key`` per row (None where a row lacks it), for metadata filters; built once
        per key (a pass over the records for fields other than id, path, label and captions)."""
        cached = self._columns.get(key)
        if cached is not None:
            return cached
        if key in ("id", "path", "label"):
            values = {"id": self.ids, "path": self.paths, "label": self.labels}[key]
        else:
            values = [
                ([] if key == "captions" else None) if self.plain[row] else self.row_json(row).get(key)
                for row in range(len(self))
            ]
        self._columns[key] = values
        return values

    def iter_records(self) -> Iterable[IndexRecord]:
        for row in range(len(self)):
            yield self.record(row)

    def vectors(self, rows: np.ndarray | slice) -> np.ndarray:
        """(n, D) float32 copies of the stored float16 embeddings."""
        return np.asarray(self.embeddings[rows], dtype=np.float32)

    def close(self) -> None:
        """Let go of the records: the memory map closes now, or with the last search hits still reading
        it (hits are built when first read, possibly after the index closed)."""
        self.reader = None


def write_embeddings(path: Path, n: int, dim: int, chunks: Iterable[np.ndarray]) -> None:
    """Write (n, D) float16 embeddings from consecutive row chunks through a memory map."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    row = 0
    for chunk in chunks:
        out[row : row + len(chunk)] = chunk
        row += len(chunk)
    if row != n:
        raise RuntimeError(f"write_embeddings: got {row} rows, expected {n}")
    out.flush()
    del out


def dir_size(folder: Path) -> int:
    """Bytes of all files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def index_info(index_dir: str | os.PathLike) -> dict:
    """The manifest of ``index_dir`` plus ``path`` and ``bytes`` on disk (no model is loaded)."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    return {**manifest, "path": str(index_dir.resolve()), "bytes": dir_size(index_dir)}
