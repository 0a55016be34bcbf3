"""Per-split manifests of the prepared lab for one run (all of it, or a fixed subset of the emoji)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mcip._io import atomic_open
from mcip.data.lab_manifest import SPLITS, read_lab_manifest


def keep_base(base: str, fraction: float) -> bool:
    """Whether base emoji ``base`` is in the fixed ``fraction`` subset (a hash, so every run agrees and
    all variants and vendors of one emoji stay together)."""
    if fraction >= 1:
        return True
    h = int.from_bytes(hashlib.blake2b(base.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_lab_data(root: Path, out: Path, fraction: float = 1.0) -> dict:
    """Write ``out/manifest.jsonl`` (what the ``lab_*`` benchmarks read: every split, absolute paths),
    ``out/{train,val,test}.jsonl`` (training manifests) and ``out/train_no_captions.jsonl`` (MCIP trains on
    pseudo-captions only). Returns those paths (``root``: ``out``) and a one-line ``summary``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(r, path=str((Path(root) / r["path"]).resolve())) for r in read_lab_manifest(Path(root))]
    rows = [r for r in rows if keep_base(r["base"], fraction)]
    paths: dict = {"root": out, "manifest": _write_jsonl(out / "manifest.jsonl", rows)}
    counts = []
    for split in SPLITS:
        part = [r for r in rows if r["split"] == split]
        paths[split] = _write_jsonl(out / f"{split}.jsonl", part)
        counts.append(f"{split} {len(part)} images / {len({r['label'] for r in part})} emoji")
    bare = [dict(r, captions=[]) for r in rows if r["split"] == "train"]
    paths["train_no_captions"] = _write_jsonl(out / "train_no_captions.jsonl", bare)
    share = "" if fraction >= 1 else f" (subset: {fraction:.0%} of the emoji)"
    paths["summary"] = "; ".join(counts) + share
    return paths
