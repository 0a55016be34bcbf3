"""Keeping an index current: remove images (by id or by a metadata filter) and rebuild it with a new model.

Both write a complete new version next to the index and swap it in, under the index's write lock, like
``build_index`` and ``add_to_index`` (``mcip.index.write``): a crash at any point leaves the old version
or the new one, never a mix, and the manifest's ``history`` records every version.

- ``remove_from_index`` keeps the stored float16 embeddings of the remaining rows (nothing is re-encoded)
  and builds the backend anew from them: a FAISS index of any factory (trained ones retrain on the kept
  vectors with the stored seed) or a new Qdrant collection (a server's alias moves to it). The cost is
  one pass over the kept rows, so batch removals rather than removing one image at a time. The skipped-file
  counts and list stay, and so does an interrupted add's staging folder (its plan is keyed on that add's
  own new images and the model, so the add resumes after the remove).
- ``rebuild_index`` re-encodes the indexed images (their records as stored) with a new model, e.g. after
  fine-tuning, with the same backend and factory; it is resumable like a build (the encoded rows wait in
  ``.NAME.staging``). In place (the default) the old index answers queries until the new one is swapped
  in; ``out`` writes the new version elsewhere and leaves the old index as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mcip.errors import ConfigError, InputError
from mcip.index.backends import create_backend
from mcip.index.filters import matching_rows, parse_where
from mcip.index.lock import index_lock, real_index_dir
from mcip.index.store import StoredIndex, read_manifest
from mcip.index.write import IDENTITY_KEYS, write_new_index


def remove_from_index(
    index_dir: str | os.PathLike,
    ids: Iterable[str] = (),
    where: Iterable[str] | None = None,
    wait: float = 0.0,
    missing_ok: bool = False,
) -> dict:
    """Remove the images ``ids`` and those matching every ``where`` filter (``mcip.index.filters``).

    An id the index does not hold fails (naming it) unless ``missing_ok``; removing every image is refused
    (delete the folder instead). Returns ``{"index", "removed", "count", "missing", "seconds"}``.
    """
    start = time.perf_counter()
    ids = list(ids)
    conditions = parse_where(list(where) if where is not None else None)
    if not ids and not conditions:
        raise ConfigError("Say what to remove: ids (--id / --ids FILE) and/or filters (--where KEY=VALUE).")
    index_dir = real_index_dir(index_dir)  # once: a symlink or a .. spelling names the same index
    read_manifest(index_dir)  # not an index: fail before a lock file is created next to it
    with index_lock(index_dir, wait, command="mcip index remove"):
        stored = StoredIndex(index_dir)
        try:
            manifest = dict(stored.manifest)
            missing = [i for i in ids if i not in stored.row_of]
            if missing and not missing_ok:
                raise InputError(
                    f"{len(missing)} id(s) are not in {index_dir} (e.g. {missing[0]!r}); check them, or pass "
                    "--missing-ok to remove the others."
                )
            drop = {stored.row_of[i] for i in ids if i in stored.row_of}
            if conditions:
                drop |= set(matching_rows(conditions, stored.column, len(stored)).tolist())
            summary = {"index": str(index_dir), "removed": len(drop), "missing": missing}
            if not drop:
                return {**summary, "count": len(stored), "seconds": round(time.perf_counter() - start, 3)}
            keep = np.asarray(sorted(set(range(len(stored))) - drop), dtype=np.int64)
            if not len(keep):
                raise ConfigError(
                    f"This would remove all {len(stored)} images of {index_dir}; delete the folder instead."
                )
            records = [stored.record(int(r)) for r in keep]
            chunks = (
                np.asarray(stored.embeddings[keep[lo : lo + 65_536]]) for lo in range(0, len(keep), 65_536)
            )
            new = _write_version(
                index_dir, manifest, records, chunks, "remove", {"removed": len(drop)}, start
            )
        finally:
            stored.close()
    return {**summary, "count": new["count"], "seconds": round(time.perf_counter() - start, 3)}


def _write_version(index_dir: Path, manifest: dict, records, chunks, op: str, entry: dict, start: float):
    store = create_backend(manifest["backend"], **manifest["backend_options"])
    store.state = dict(manifest.get("backend_state", {}))
    identity = {k: manifest.get(k) for k in IDENTITY_KEYS}
    lineage = {"history": manifest.get("history", []), "created": manifest.get("created"), "op": op}
    lineage["entry"] = entry
    lineage["previous"] = manifest  # nothing is encoded: its skipped counts and any staging stay
    return write_new_index(index_dir, store, records, chunks, identity, {}, start, lineage)


def rebuild_index(
    index_dir: str | os.PathLike,
    model: Any,
    out: str | os.PathLike | None = None,
    batch_size: int = 64,
    progress: bool = True,
    *,
    device: str = "cpu",
    num_workers: int = 0,
    model_options: dict[str, Any] | None = None,
    wait: float = 0.0,
    compile: bool = False,
    engine: str = "local",
    ray_options: Any = None,
) -> dict:
    """Re-encode every image of ``index_dir`` with ``model`` (a spec, model folder or EmbeddingModel) into
    ``out`` (default: in place), with the same backend, factory and options; the new manifest's history
    continues the old one with a ``rebuild`` entry naming both models. ``compile``, ``engine`` and
    ``ray_options`` (a :class:`~mcip.index.ray_engine.RayOptions`): as in
    :func:`~mcip.index.build.build_index`. Returns the build summary."""
    from mcip.index.build import build_index

    index_dir = real_index_dir(index_dir)
    target = real_index_dir(out) if out is not None else index_dir
    read_manifest(index_dir)
    with index_lock(index_dir, wait, command="mcip index rebuild"):
        stored = StoredIndex(index_dir)
        try:
            manifest = dict(stored.manifest)
            records = list(stored.iter_records())
        finally:
            stored.close()
        entry = {
            "previous_model": manifest.get("model"),
            "previous_image_fingerprint": manifest.get("image_fingerprint"),
        }
        lineage = {
            "history": manifest.get("history", []),
            "created": manifest.get("created"),
            "op": "rebuild",
        }
        lineage["entry"] = entry
        if target != index_dir:
            lineage["entry"] = {**entry, "source": str(index_dir)}
        summary = build_index(
            model,
            records,
            target,
            factory=manifest.get("factory") or "Flat",
            backend=manifest["backend"],
            batch_size=batch_size,
            progress=progress,
            device=device,
            num_workers=num_workers,
            model_options=model_options,
            wait=wait,
            lineage=lineage,
            compile=compile,
            engine=engine,
            ray_options=ray_options,
            **{k: v for k, v in manifest.get("backend_options", {}).items() if k != "factory"},
        )
    return {**summary, "previous_model": manifest.get("model")}
