"""Combine several caption sidecars (e.g. retrieved + generated + templates) with a cap per image."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mcip._io import atomic_write_text
from mcip.data.captions import caption_sidecar_lines, read_caption_entries
from mcip.errors import ConfigError


def merge_sidecars(
    inputs: Sequence[str | os.PathLike], out: str | os.PathLike, max_per_image: int = 20
) -> dict:
    """Per image: the captions of every input, in input order (so earlier inputs take precedence),
    exact-duplicate texts removed (first kept), at most ``max_per_image``. Writes a new ``out``
    (replacing it atomically) and returns the merged entries by id."""
    if max_per_image < 1:
        raise ConfigError(f"max_per_image must be >= 1, got {max_per_image}.")
    out = Path(out)
    if any(Path(p).resolve() == out.resolve() for p in inputs):
        raise ConfigError(f"The output {out} is also an input; write the merge to a new file.")
    merged: dict[str, list[dict]] = {}
    for path in inputs:
        for image_id, entries in read_caption_entries(path).items():
            kept = merged.setdefault(image_id, [])
            seen = {e["text"] for e in kept}
            for entry in entries:
                if len(kept) < max_per_image and entry["text"] not in seen:
                    kept.append(entry)
                    seen.add(entry["text"])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(caption_sidecar_lines(merged)))
    return merged
