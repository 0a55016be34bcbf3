"""``mcip data shard``: a manifest (or image folder) -> webdataset tar shards with an index JSON, resumable.

The records are put in order once (shuffled with ``seed`` unless ``shuffle=False``) and dealt into shards
of ``shard_size``: shard ``s`` holds records ``s * shard_size ..`` of that order, sample ``i`` of the order
gets the key ``f"{i:09d}"`` (``KEY.<ext>`` with the image bytes copied, ``KEY.json`` with ``id``, ``label``
and ``captions``: the layout :mod:`mcip.data.tarshards` reads). Each shard is written atomically; after
each one the index ``shards.json`` is rewritten (atomically) with, per shard, its keys, sample count, size
and the records whose image could not be read (left out, counted and listed with the reason). Run again
with the same arguments, the job keeps the shards the index lists (same plan, same file size) and writes
only the others, so an interrupted run loses at most the shard it was writing.

Read back with ``read_shard_records`` (records in shard order, ``path = SHARD#KEY``): with
``shuffle=False`` they are the manifest's records in its order, so training from the shards takes the same
batches as training from the manifest with the same seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

from mcip._io import atomic_write_json
from mcip.data.manifest import load_records
from mcip.data.records import ImageRecord
from mcip.data.tarshards import _write_shard
from mcip.errors import ConfigError, InputError

INDEX_NAME = "shards.json"
INDEX_FORMAT = "mcip-shards/1"

__all__ = ["INDEX_NAME", "read_shard_index", "shard_manifest", "shard_records"]


def _plan(records: Sequence[ImageRecord], shard_size: int, shuffle: bool, seed: int, prefix: str) -> dict:
    digest = hashlib.sha256()
    for r in records:
        digest.update(json.dumps([r.id, str(r.path), r.label, list(r.captions)]).encode())
    return {
        "records": len(records),
        "records_sha256": digest.hexdigest(),
        "shard_size": shard_size,
        "shuffle": shuffle,
        "seed": seed,
        "prefix": prefix,
    }


def read_shard_index(out_dir: str | os.PathLike) -> dict | None:
    """The index ``OUT/shards.json`` of :func:`shard_records`, or None if there is none."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path} is not a readable shard index ({exc}); delete it to write the shards anew."
        ) from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise InputError(
            f"{path} is not an mcip shard index ({INDEX_FORMAT}); write the shards to another --out."
        )
    return index


def _resumable(index: dict | None, plan: dict, out: Path) -> dict[str, dict]:
    """The finished shards of ``index`` that are still on disk as written (same plan)."""
    if index is None:
        return {}
    if index.get("plan") != plan:
        raise InputError(
            f"{out} holds shards of another plan (other records, shard size, order or prefix; see "
            f"{out / INDEX_NAME}). Write to an empty --out, or delete the folder to write it anew."
        )
    done = {}
    for name, entry in index.get("shards", {}).items():
        path = out / name
        if path.is_file() and path.stat().st_size == entry.get("bytes"):
            done[name] = entry
    return done


def _totals(index: dict) -> None:
    shards = index["shards"].values()
    index["samples"] = sum(e["count"] for e in shards)
    index["skipped"] = [s for e in shards for s in e["skipped"]]
    index["skipped_count"] = len(index["skipped"])


def shard_records(
    records: Sequence[ImageRecord],
    out_dir: str | os.PathLike,
    shard_size: int = 1000,
    shuffle: bool = True,
    seed: int = 0,
    prefix: str = "shard",
    source: str = "",
) -> dict:
    """Write ``records`` as shards under ``out_dir`` (see the module docstring); returns the index.

    Index: ``{"format", "source", "plan", "complete", "samples", "skipped_count", "skipped": [{"id",
    "path", "reason"}], "shards": {NAME: {"keys", "count", "bytes", "skipped"}}}``.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard_size must be an integer >= 1, got {shard_size!r}.")
    if not records:
        raise InputError("No records to shard: the source lists no images.")
    order = list(records)
    if shuffle:
        random.Random(seed).shuffle(order)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(order, shard_size, shuffle, seed, prefix)
    index = {"format": INDEX_FORMAT, "source": source, "plan": plan, "complete": False, "shards": {}}
    index["shards"] = _resumable(read_shard_index(out), plan, out)
    for s, start in enumerate(range(0, len(order), shard_size)):
        name = f"{prefix}-{s:06d}.tar"
        if name in index["shards"]:
            continue
        keys, skipped = _write_shard(out / name, order[start : start + shard_size], start)
        index["shards"][name] = {
            "keys": keys,
            "count": len(keys),
            "bytes": (out / name).stat().st_size,
            "skipped": [{"id": r.id, "path": str(r.path), "reason": why} for r, why in skipped],
        }
        _totals(index)
        atomic_write_json(out / INDEX_NAME, index, indent=1)
    index["shards"] = dict(sorted(index["shards"].items()))
    index["complete"] = True
    _totals(index)
    atomic_write_json(out / INDEX_NAME, index, indent=1)
    return index


def shard_manifest(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    shard_size: int = 1000,
    shuffle: bool = True,
    seed: int = 0,
    prefix: str = "shard",
    root: str | os.PathLike | None = None,
    encoding: str | None = None,
) -> dict:
    """:func:`shard_records` of the records of a manifest, an image folder or other shards
    (:func:`mcip.data.manifest.load_records`: labels and captions as training reads them)."""
    records = load_records(source, root, encoding)
    return shard_records(records, out_dir, shard_size, shuffle, seed, prefix, source=os.fspath(source))
