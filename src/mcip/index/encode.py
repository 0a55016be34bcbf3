"""Encoding the images of a build, resumable: an interrupted build continues where it stopped.

The staging folder (next to the index, see ``store.staging_dir``) holds::

    plan.json        {"key", "n", "dim"}: what is being encoded (image tower + ordered (id, path) list)
    features.npy     (n, D) float16 rows, written through a memory map; unreadable images are NaN rows
    skipped.jsonl    {"row", "path", "error"} per unreadable image
    progress.json    {"rows": k}: rows 0..k-1 are on disk (written after each batch is flushed)

A rerun with the same plan starts at row k; any other plan starts over (with a warning).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mcip._io import atomic_write_text
from mcip.data.cache import cache_key
from mcip.data.dataset import decode_image
from mcip.data.images import eval_decoding
from mcip.index.records import IndexRecord, file_hash, file_stat
from mcip.index.store import write_json
from mcip.models.base import EmbeddingModel


@dataclass
class Encoded:
    """(n, D) float16 embeddings (NaN rows: unreadable images), the skipped files and what was resumed."""

    embeddings: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)
    resumed_rows: int = 0
    seconds: float = 0.0
    hashes: dict[int, tuple] = field(default_factory=dict)  # row -> (content hash, [size, mtime_ns])

    @property
    def readable(self) -> np.ndarray:
        """(n,) bool: the rows that hold an embedding."""
        ok = np.ones(self.embeddings.shape[0], dtype=bool)
        for lo in range(0, len(ok), 65_536):
            ok[lo : lo + 65_536] = ~np.isnan(self.embeddings[lo : lo + 65_536, 0])
        return ok


class _Rows(Dataset):
    """Row ``start + i`` -> ``(row, pixels or None, error or None)``; decoding never raises."""

    def __init__(self, records: Sequence[IndexRecord], start: int, transform: Callable) -> None:
        self.records, self.start, self.transform = records, start, transform

    def __len__(self) -> int:
        return len(self.records) - self.start

    def __getitem__(self, i: int):
        row = self.start + i
        path = self.records[row].path
        decoded = decode_image(path, self.transform, str(path))
        if isinstance(decoded, str):
            return row, None, decoded, None
        try:  # the bytes just decoded are in the page cache: hashing them reads no disk
            digest = (file_hash(path), file_stat(path))
        except OSError as exc:
            return row, None, f"{path}: {type(exc).__name__}: {exc}", None
        return row, decoded, None, digest


def _collate(items):
    rows = [row for row, pixels, _, _ in items if pixels is not None]
    pixels = torch.stack([p for _, p, _, _ in items if p is not None]) if rows else None
    errors = {row: error for row, _, error, _ in items if error is not None}
    hashes = {row: h for row, _, _, h in items if h is not None}
    return [row for row, _, _, _ in items], rows, pixels, errors, hashes


def plan_key(image_fingerprint: str, dim: int, records: Sequence[IndexRecord]) -> str:
    return cache_key(
        "mcip-index",
        image_fingerprint,
        str(dim),
        eval_decoding(),
        cache_key(*(f"{r.id}\t{r.path}" for r in records)),
    )


def _rows_done(staging: Path, plan: dict) -> int:
    """Rows already encoded for ``plan``; 0 after clearing a staging folder of another plan."""
    try:
        stored = json.loads((staging / "plan.json").read_text())
        rows = int(json.loads((staging / "progress.json").read_text())["rows"])
    except (OSError, ValueError, KeyError):
        stored, rows = None, 0
    if stored == plan and (staging / "features.npy").is_file():
        return rows
    if stored is not None:
        warnings.warn(
            f"{staging} holds an interrupted build of other images or another model; starting over.",
            stacklevel=3,
        )
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    np.lib.format.open_memmap(
        staging / "features.npy", mode="w+", dtype=np.float16, shape=(plan["n"], plan["dim"])
    )
    write_json(staging / "plan.json", plan)
    write_json(staging / "progress.json", {"rows": 0})
    return 0


def _parse(line: str) -> dict | None:
    """A line of skipped.jsonl; None for the half-written last line of a killed run."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and {"row", "path", "error"} <= set(entry) else None


def _read_skipped(staging: Path, rows_done: int) -> dict[str, str]:
    """The unreadable images among the rows done; entries of rows that will be encoded again are dropped."""
    path = staging / "skipped.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    entries = [entry for entry in map(_parse, lines) if entry is not None and entry["row"] < rows_done]
    atomic_write_text(path, "".join(json.dumps(entry) + "\n" for entry in entries))
    return {entry["path"]: entry["error"] for entry in entries}


def _read_hashes(staging: Path, rows_done: int) -> dict[int, tuple[str, list[int]]]:
    """The content hashes of the rows done (a torn last line of a killed run is skipped)."""
    path = staging / "hashes.jsonl"
    out = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
            if int(entry["row"]) < rows_done:
                out[int(entry["row"])] = (str(entry["hash"]), [int(x) for x in entry["stat"]])
        except (ValueError, KeyError, TypeError):
            continue
    return out


@torch.no_grad()
def encode_records(
    model: EmbeddingModel,
    records: Sequence[IndexRecord],
    staging: Path,
    key: str,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    compile: bool = False,
) -> Encoded:
    """Encode ``records`` into ``staging`` (resuming a plan with the same ``key``); see the module docstring.
    ``compile``: the image tower runs through ``torch.compile`` (:mod:`mcip.models.compiled`)."""
    from mcip.models.compiled import image_encoder

    start = time.perf_counter()
    encode = image_encoder(model, compile, batch_size)
    plan = {"key": key, "n": len(records), "dim": int(model.embed_dim)}
    done = _rows_done(staging, plan)
    out = np.lib.format.open_memmap(staging / "features.npy", mode="r+")
    skipped = _read_skipped(staging, done)
    hashes = _read_hashes(staging, done)
    loader = DataLoader(
        _Rows(records, done, model.eval_transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    with (
        tqdm(
            total=len(records), initial=done, desc="encoding images", unit="img", disable=not progress
        ) as bar,
        open(staging / "skipped.jsonl", "a") as log,
        open(staging / "hashes.jsonl", "a") as hash_log,
    ):
        for rows, kept, pixels, errors, batch_hashes in loader:
            if pixels is not None:
                out[kept] = encode(pixels).float().cpu().numpy()
            for row, error in errors.items():
                out[row] = np.nan
                path = str(records[row].path)
                skipped[path] = error
                log.write(json.dumps({"row": row, "path": path, "error": error}) + "\n")
            for row, digest in batch_hashes.items():
                hashes[row] = digest
                hash_log.write(json.dumps({"row": row, "hash": digest[0], "stat": digest[1]}) + "\n")
            out.flush()
            log.flush()
            hash_log.flush()
            write_json(staging / "progress.json", {"rows": rows[-1] + 1})
            bar.update(len(rows))
    del out
    embeddings = np.load(staging / "features.npy", mmap_mode="r")
    return Encoded(embeddings, skipped, done, time.perf_counter() - start, hashes)
