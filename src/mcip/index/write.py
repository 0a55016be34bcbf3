"""Writing a new version of an index folder: into a temporary sibling folder, manifest last, then swapped
in (``mcip.index.store``), after which the backend commits (a Qdrant server moves its alias)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import mcip
from mcip.index.backends import Backend
from mcip.index.store import (
    EMBEDDINGS,
    FORMAT,
    MANIFEST,
    VERSION,
    StoredIndex,
    new_temp_dir,
    read_manifest,
    staging_dir,
    swap_into_place,
    write_embeddings,
    write_json,
    write_records,
)

MAX_SKIPPED_LISTED = 100
SKIPPED_KEYS = ("skipped_unreadable", "skipped_duplicates", "skipped_files")  # counts over every write
IDENTITY_KEYS = (  # the manifest fields that say which model an index belongs to (mcip.index.identity)
    "model",
    "model_options",
    "model_backend",
    "fingerprint",
    "image_fingerprint",
    "text_fingerprint",
    "dim",
    "normalized",
)


def now() -> str:
    """UTC time, ISO 8601, in seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def kept_chunks(encoded: np.ndarray, ok: np.ndarray, rows: int = 65_536) -> Iterator[np.ndarray]:
    """The rows of ``encoded`` (n, D) where ``ok`` (n,) is true, in bounded chunks."""
    for lo in range(0, len(ok), rows):
        yield np.asarray(encoded[lo : lo + rows])[ok[lo : lo + rows]]


def _finish(
    tmp: Path,
    index_dir: Path,
    backend: Backend,
    manifest: dict,
    previous_state: dict | None,
    encoded: bool = True,
) -> None:
    """Write the manifest last, swap the folder in, let the backend commit, and drop the staging folder
    when this version holds the rows encoded there (``encoded``); a version that encoded nothing (a
    remove) leaves an interrupted add's staging for that add to resume."""
    write_json(tmp / MANIFEST, manifest)
    swap_into_place(tmp, index_dir)
    backend.commit(previous_state)
    if encoded:
        shutil.rmtree(staging_dir(index_dir), ignore_errors=True)


def _history_entry(
    op: str, added: int, unreadable: int, duplicates: int, seconds: float, **extra: object
) -> dict:
    return {
        "op": op,
        "time": now(),
        "added": added,
        "unreadable": unreadable,
        "duplicates": duplicates,
        "seconds": round(seconds, 3),
        **extra,
    }


def write_new_index(
    index_dir: Path,
    store: Backend,
    records,
    chunks,
    identity: dict,
    skipped: dict,
    start: float,
    lineage: dict | None = None,
) -> dict:
    """Write a complete index of ``records`` and their embedding ``chunks`` next to ``index_dir``, swap it in.

    ``lineage``: for a new version of an existing index (``remove``, ``rebuild``): ``history`` (the earlier
    entries, kept), ``created`` (kept), ``op`` and ``entry`` (extra fields of this version's history entry),
    and for a version that encodes nothing (``remove``) ``previous``: the previous manifest, whose skipped
    counts and list are kept; the staging folder (an interrupted add's, still valid) is then left alone.
    """
    previous = read_manifest(index_dir).get("backend_state") if (index_dir / MANIFEST).is_file() else None
    lineage = lineage or {}
    tmp = new_temp_dir(index_dir)
    try:
        write_embeddings(tmp / EMBEDDINGS, len(records), identity["dim"], chunks)
        ids = write_records(tmp, records)
        store.build(tmp, np.load(tmp / EMBEDDINGS, mmap_mode="r"), ids)
        time_now = now()
        history = _history_entry(
            lineage.get("op", "build"),
            len(records),
            len(skipped),
            0,
            time.perf_counter() - start,
            model=identity.get("model"),
            **lineage.get("entry", {}),
        )
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "mcip_version": mcip.__version__,
            "created": lineage.get("created", time_now),
            "updated": time_now,
            **identity,
            "dtype": "float16",
            "count": len(records),
            "backend": store.name,
            "factory": store.factory,
            "backend_options": store.stored_options(),
            "backend_state": store.state,
            "skipped_unreadable": len(skipped),
            "skipped_duplicates": 0,
            "skipped_files": dict(list(skipped.items())[:MAX_SKIPPED_LISTED]),
            "history": [*lineage.get("history", []), history],
        }
        earlier = lineage.get("previous")
        if earlier is not None:
            manifest.update({k: earlier[k] for k in SKIPPED_KEYS if k in earlier})
        _finish(tmp, index_dir, store, manifest, previous, encoded=earlier is None)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def write_appended_index(
    stored: StoredIndex,
    store: Backend,
    records,
    chunks,
    manifest: dict,
    skipped: dict,
    duplicates: int,
    start: float,
) -> dict:
    """The index ``stored`` plus ``records`` and their embedding ``chunks``, written next to it and swapped
    in; returns the updated manifest."""
    index_dir, n_old, dim = stored.dir, len(stored), int(manifest["dim"])
    tmp = new_temp_dir(index_dir)
    try:
        old_chunks = (stored.embeddings[lo : lo + 65_536] for lo in range(0, n_old, 65_536))
        all_chunks = (c for part in (old_chunks, chunks) for c in part)
        write_embeddings(tmp / EMBEDDINGS, n_old + len(records), dim, all_chunks)
        ids = write_records(tmp, records, copy_from=index_dir)
        store.append(index_dir, tmp, np.load(tmp / EMBEDDINGS, mmap_mode="r"), n_old, ids)
        unreadable = len(skipped)
        history = _history_entry("add", len(records), unreadable, duplicates, time.perf_counter() - start)
        manifest.update(
            updated=now(),
            count=n_old + len(records),
            backend_state=store.state,
            skipped_unreadable=manifest.get("skipped_unreadable", 0) + unreadable,
            skipped_duplicates=manifest.get("skipped_duplicates", 0) + duplicates,
            skipped_files=dict(list(skipped.items())[:MAX_SKIPPED_LISTED]),
            history=[*manifest.get("history", []), history],
        )
        _finish(tmp, index_dir, store, manifest, dict(store.state))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
