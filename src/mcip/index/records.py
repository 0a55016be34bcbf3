"""What an index holds per image: an id, the image file, and JSON-safe metadata.

Sources (``load_index_records``):

- an image folder: every image under it, recursively; the id is the path relative to the folder
  (posix), the label the first sub-folder ('' for images directly in the folder);
- a manifest (``.csv``, ``.jsonl``, ``.parquet``, as in training: ``path``, optional ``id``, ``label``,
  ``captions``); every other column is kept as metadata, typed (a CSV column by its declared or inferred
  type, see ``mcip.index.values``);
- a list of :class:`~mcip.data.ImageRecord` or :class:`IndexRecord`.

- webdataset tar shards (a ``.tar`` path, glob or brace range, as in training): one record per sample, its
  ``path`` the reference ``SHARD.tar#KEY`` (absolute shard; :mod:`mcip.data.shard_ref`), which the index
  encodes, hashes and ``mcip serve`` returns by reading that member.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mcip.data.images import find_images, read_image_bytes
from mcip.data.manifest import PATH_COLUMNS, is_shard_source, read_manifest_rows
from mcip.data.records import ImageRecord, check_unique_ids, label_text, parse_captions, warn_mixed_labels
from mcip.data.shard_ref import member_ref, split_member_ref
from mcip.errors import InputError
from mcip.index.values import type_csv_columns

LABEL_COLUMNS = ("label", "class")
HASH_FIELD = "content_hash"
STAT_FIELD = "content_stat"
_RESERVED = {"id", "label", "class", "captions", HASH_FIELD, STAT_FIELD, *PATH_COLUMNS}


@dataclass(frozen=True)
class IndexRecord:
    """One image of an index: ``id`` (unique), ``path`` (absolute), ``label``, ``captions`` and ``extra``
    (the manifest's other columns, JSON-safe)."""

    id: str
    path: Path
    label: str = ""
    captions: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)
    content_hash: str | None = None  # of the file's bytes when it was encoded (``file_hash``)
    content_stat: tuple[int, int] | None = None  # (size, mtime_ns) then (``file_stat``)

    def metadata(self) -> dict:
        """``{"label", "captions", **extra}``: what a search hit carries besides id, path and score."""
        return {"label": self.label, "captions": list(self.captions), **self.extra}

    def to_json(self) -> dict:
        row = {"id": self.id, "path": str(self.path), **self.metadata()}
        if self.content_hash is not None:
            row[HASH_FIELD] = self.content_hash
        if self.content_stat is not None:
            row[STAT_FIELD] = list(self.content_stat)
        return row

    @classmethod
    def from_json(cls, row: dict) -> IndexRecord:
        row = dict(row)
        return cls(
            id=row.pop("id"),
            path=Path(row.pop("path")),
            label=row.pop("label", ""),
            captions=tuple(row.pop("captions", ())),
            content_hash=row.pop(HASH_FIELD, None),
            content_stat=tuple(stat) if (stat := row.pop(STAT_FIELD, None)) else None,
            extra=row,
        )


def file_stat(path: str | os.PathLike) -> list[int]:
    """``[size, mtime_ns]`` of a file (of the shard, for a reference ``SHARD#KEY``): when both are as
    stored, ``index add`` does not re-read it."""
    ref = split_member_ref(path)
    st = os.stat(ref[0] if ref else path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def file_hash(path: str | os.PathLike) -> str:
    """The content hash an index stores per image (BLAKE2b, 128 bits, hex, read in 1 MiB blocks):
    ``mcip index add`` re-encodes an indexed id whose file no longer has it. For a shard reference
    ``SHARD#KEY``, of the member's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    if split_member_ref(path) is not None:
        digest.update(read_image_bytes(path))
        return digest.hexdigest()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _json_safe(value: object) -> object:
    """``value`` if JSON can hold it as is, else its ``str``."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def _first_present(row: dict, names: Sequence[str]) -> object:
    for name in names:
        value = row.get(name)
        if value is not None and str(value).strip() != "":
            return value
    return None


def _label(row: dict, where: str) -> str:
    """The first non-empty of the label columns ('' if none); null and non-scalar labels are refused."""
    for column in LABEL_COLUMNS:
        if column in row:
            text = label_text(row[column], where, column, required=False)
            if text:
                return text
    return ""


def _manifest_record(row: dict, base: Path, where: str) -> IndexRecord:
    raw = _first_present(row, PATH_COLUMNS)
    if raw is None:
        raise InputError(
            f"{where}: no image path; every row needs a '{PATH_COLUMNS[0]}' "
            f"(also accepted: {', '.join(PATH_COLUMNS[1:])})."
        )
    path = Path(str(raw).strip())
    full = (path if path.is_absolute() else base / path).resolve()
    rec_id = _first_present(row, ("id",))
    if rec_id is None:
        rec_id = path.as_posix() if not path.is_absolute() else full.as_posix()
    extra = {k: _json_safe(v) for k, v in row.items() if k not in _RESERVED}
    return IndexRecord(
        id=str(rec_id).strip(),
        path=full,
        label=_label(row, where),
        captions=parse_captions(row.get("captions"), where),
        extra=extra,
    )


def read_index_manifest(
    path: str | os.PathLike, root: str | os.PathLike | None = None, encoding: str | None = None
) -> list[IndexRecord]:
    """Records from a manifest; relative paths start at ``root`` (default: the manifest's folder);
    ``encoding`` of a CSV / JSONL file (default: detected, see ``mcip.data.textfile``)."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    rows = read_manifest_rows(path, encoding)
    if path.suffix.lower() == ".csv":  # text cells: one type per column (mcip.index.values)
        rows = type_csv_columns(rows, _RESERVED, path)
    records = [_manifest_record(row, base, f"{path}, row {i + 1}") for i, row in enumerate(rows)]
    raw_labels = ((f"row {i + 1}", _first_present(row, LABEL_COLUMNS)) for i, row in enumerate(rows))
    warn_mixed_labels(raw_labels, path)
    check_unique_ids(records, path)
    return records


def read_index_folder(root: str | os.PathLike) -> list[IndexRecord]:
    """Every image under ``root``; id = relative posix path, label = first sub-folder ('' if none)."""
    root = Path(root)
    records = []
    for path in find_images(root):
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else ""
        records.append(IndexRecord(id=rel.as_posix(), path=path.resolve(), label=label))
    return records


def _from_objects(items: Sequence[ImageRecord | IndexRecord]) -> list[IndexRecord]:
    out = []
    for item in items:
        if isinstance(item, IndexRecord):
            out.append(item if item.path.is_absolute() else _with_path(item, item.path.resolve()))
        elif isinstance(item, ImageRecord):
            out.append(IndexRecord(item.id, Path(item.path).resolve(), item.label, item.captions))
        else:
            raise InputError(f"Expected ImageRecord or IndexRecord items, got {type(item).__name__}.")
    check_unique_ids(out, "the records given")
    return out


def read_index_shards(source: str | os.PathLike) -> list[IndexRecord]:
    """One record per sample of the shards ``source`` (id, label and captions from its JSON), its path
    ``SHARD#KEY`` with the shard made absolute."""
    from mcip.data.webdataset import list_shards, read_shard_records

    records = []
    for r in read_shard_records(list_shards(source)):
        shard, key = split_member_ref(r.path)
        records.append(IndexRecord(r.id, member_ref(shard.resolve(), key), r.label, r.captions))
    return records


def _with_path(record: IndexRecord, path: Path) -> IndexRecord:
    return IndexRecord(record.id, path, record.label, record.captions, record.extra)


def load_index_records(
    source: str | os.PathLike | Sequence[ImageRecord | IndexRecord],
    root: str | os.PathLike | None = None,
    encoding: str | None = None,
) -> list[IndexRecord]:
    """Records to index from a folder, a manifest (``encoding``: of a CSV / JSONL one; default: detected)
    or a list of records (see the module docstring)."""
    if not isinstance(source, str | os.PathLike):
        if not source:
            raise InputError("No records to index: the list is empty.")
        return _from_objects(source)
    path = Path(source)
    if path.is_dir():
        return read_index_folder(path)
    if path.suffix.lower() in (".csv", ".jsonl", ".parquet"):
        return read_index_manifest(path, root, encoding)
    if is_shard_source(source):
        return read_index_shards(source)
    if not path.exists():
        raise InputError(f"Image source not found: {source}.")
    raise InputError(
        f"Cannot index {source}: expected an image folder or a manifest (.csv, .jsonl, .parquet with a "
        "'path' column)."
    )
