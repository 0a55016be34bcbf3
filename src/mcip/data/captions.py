"""Caption sidecars: captions kept apart from the manifest, keyed by image id.

The sidecar is JSONL, one object per line (the format the pseudo-caption commands append to)::

    {"id": "cat/001.jpg", "captions": [{"text": "a cat on a sofa", "source": "blip2", "score": 0.31}]}

A caption entry may also be a plain string. Lines that do not parse are skipped and counted (a job killed
while appending leaves at most one broken line); repeated ids are merged in file order.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from mcip.data.records import ImageRecord
from mcip.data.textfile import open_text
from mcip.errors import ConfigError, InputError


def _caption_entries(entries: object) -> list[dict] | None:
    """A line's ``captions`` as dicts with ``text`` (plain strings become ``{"text": s}``); None if malformed."""
    if not isinstance(entries, list):
        return None
    out = []
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {"text": entry}
        if not isinstance(entry.get("text"), str):
            return None
        out.append(entry)
    return out


def _parse_line(line: str) -> tuple[str, list[dict]] | None:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str | int):
        return None
    entries = _caption_entries(obj.get("captions"))
    return None if entries is None else (str(obj["id"]), entries)


def read_caption_entries(path: str | os.PathLike, encoding: str | None = None) -> dict[str, list[dict]]:
    """Caption entries (``text``, ``source``, ``score``) by image id, in file order; repeated ids are merged
    and malformed lines skipped with one warning. Ids whose line lists no caption map to ``[]``.
    ``encoding``: None detects (BOM, else UTF-8); a file that does not decode fails with the byte offset."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Caption sidecar not found: {path}.")
    by_id: dict[str, list[dict]] = {}
    bad, first_bad = 0, 0
    with open_text(path, encoding) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parsed = _parse_line(line)
            if parsed is None:
                bad, first_bad = bad + 1, first_bad or line_no
                continue
            by_id.setdefault(parsed[0], []).extend(parsed[1])
    if bad:
        warnings.warn(
            f"{path}: skipped {bad} malformed line(s) (first: line {first_bad}); each line must be "
            '{"id": ..., "captions": [{"text": ...}, ...]}.',
            stacklevel=2,
        )
    return by_id


def read_caption_sidecar(path: str | os.PathLike, encoding: str | None = None) -> dict[str, list[str]]:
    """Caption texts by image id from a sidecar JSONL (see :func:`read_caption_entries`)."""
    return {i: [e["text"] for e in entries] for i, entries in read_caption_entries(path, encoding).items()}


def _dedupe(texts: Sequence[str], limit: int) -> tuple[str, ...]:
    """Stripped, non-empty, first occurrence kept, at most ``limit``."""
    out = dict.fromkeys(t.strip() for t in texts if t.strip())
    return tuple(out)[:limit]


def attach_captions(
    records: Sequence[ImageRecord], captions_by_id: Mapping[str, Sequence[str]], max_per_image: int = 20
) -> list[ImageRecord]:
    """Records with the sidecar's captions appended to their own (deduplicated, order kept, capped).

    Warns with the number of images left without any caption. Fails if the sidecar has captions but
    none of its ids matches a record (the usual cause: ids written relative to another root).
    """
    if isinstance(max_per_image, bool) or not isinstance(max_per_image, int) or max_per_image < 1:
        raise ConfigError(f"max_per_image must be an integer >= 1, got {max_per_image!r}.")
    ids = {r.id for r in records}
    if captions_by_id and records and not ids.intersection(captions_by_id):
        raise InputError(
            f"None of the {len(captions_by_id)} caption ids matches an image id (e.g. caption id "
            f"'{next(iter(captions_by_id))}' vs image id '{records[0].id}'); write the sidecar with the "
            "same ids as the manifest (default: the path relative to the data root)."
        )
    out = [
        replace(r, captions=_dedupe([*r.captions, *captions_by_id.get(r.id, ())], max_per_image))
        for r in records
    ]
    missing = sum(1 for r in out if not r.captions)
    if missing:
        warnings.warn(f"{missing} of {len(out)} images have no caption.", stacklevel=2)
    return out


def _ends_without_newline(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def caption_sidecar_lines(
    captions_by_id: Mapping[str, Sequence[str | Mapping]], source: str = "manual"
) -> Iterator[str]:
    """The sidecar lines (newline-terminated JSON) for ``captions_by_id``, as :func:`write_caption_sidecar`
    writes them."""
    for image_id, entries in captions_by_id.items():
        caps = [
            dict(e) if isinstance(e, Mapping) else {"text": e, "source": source, "score": None}
            for e in entries
        ]
        yield json.dumps({"id": str(image_id), "captions": caps}, ensure_ascii=False) + "\n"


def write_caption_sidecar(
    path: str | os.PathLike, captions_by_id: Mapping[str, Sequence[str | Mapping]], source: str = "manual"
) -> int:
    """Append one line per id to the sidecar at ``path`` (created if missing); returns the lines written.

    Entries are strings (stored as ``{"text": s, "source": source, "score": None}``) or mappings with
    at least ``text``. A broken last line left by an interrupted writer is closed off first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needs_newline = _ends_without_newline(path)
    with open(path, "a", encoding="utf-8") as f:
        if needs_newline:
            f.write("\n")
        f.writelines(caption_sidecar_lines(captions_by_id, source))
        f.flush()
    return len(captions_by_id)
