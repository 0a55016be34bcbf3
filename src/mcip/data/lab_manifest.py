"""The offline lab's manifest, ``ROOT/manifest.jsonl``: its splits and its reader.

``mcip lab prepare`` (``mcip.lab.prepare``) writes it and the ``lab_*`` benchmarks
(``mcip.eval.benchmarks.lab``) read it; both import this module, so the library never reaches up into
the lab application. One line per image: ``{"path", "label", "id", "captions", "vendor", "base",
"category", "subcategory", "split"}`` (field meanings in ``mcip.lab.prepare``).
"""

from __future__ import annotations

import json
from pathlib import Path

from mcip.errors import ConfigError, MCIPError

SPLITS = ("train", "val", "test")
"""The lab's splits, disjoint by base emoji (assigned by ``mcip.lab.split``)."""

MANIFEST_NAME = "manifest.jsonl"


class LabDataError(MCIPError, RuntimeError):
    """The lab data could not be fetched, checked or unpacked; the message says what to do."""


def read_lab_manifest(root: Path, split: str | None = None) -> list[dict]:
    """The manifest lines of ``root`` (all, or one split), as dicts."""
    if split is not None and split not in SPLITS:
        raise ConfigError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise LabDataError(f"No lab manifest at {path}: run `mcip lab prepare --root {root}` first.")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]
