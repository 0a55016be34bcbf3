"""Reading training data: manifests (CSV / JSONL / Parquet), image folders and webdataset shards.

A manifest has one row per image with the columns

- ``path`` (aliases ``image``, ``filepath``): the image file; relative paths resolve against ``root``
  (default: the manifest's folder);
- ``label`` (alias ``class``): the class name (a string; a number is read as its text, and a file
  mixing both warns; null and lists are refused with the row);
- ``id`` (optional): a unique key; default: the image path relative to the root, in posix form;
- ``captions`` (optional): JSONL / Parquet: a list of strings; CSV: a JSON list (``["a", "b"]``) or
  ``|``-separated texts (``a photo|a drawing``).

CSV and JSONL files are UTF-8 or what their byte-order mark says; others need ``encoding``
(``mcip.data.textfile``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

from mcip.data.images import find_images
from mcip.data.records import ImageRecord, check_unique_ids, label_text, parse_captions, warn_mixed_labels
from mcip.data.textfile import open_text
from mcip.errors import InputError, require

PATH_COLUMNS = ("path", "image", "filepath")
LABEL_COLUMNS = ("label", "class")


def _read_csv(path: Path, encoding: str | None) -> list[dict]:
    with open_text(path, encoding, newline="") as f:
        return list(csv.DictReader(f))


def _read_jsonl(path: Path, encoding: str | None) -> list[dict]:
    rows = []
    with open_text(path, encoding) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path}, line {line_no}: not valid JSON ({exc}); fix or remove the line."
                ) from exc
            if not isinstance(row, dict):
                raise InputError(f"{path}, line {line_no}: expected a JSON object per line, got {row!r}.")
            rows.append(row)
    return rows


def _read_parquet(path: Path, encoding: str | None) -> list[dict]:
    del encoding  # Parquet stores its strings as UTF-8
    pq = require("pyarrow.parquet", "data", "Parquet manifests")
    return pq.read_table(path).to_pylist()


_READERS: dict[str, Callable[[Path, str | None], list[dict]]] = {
    ".csv": _read_csv,
    ".jsonl": _read_jsonl,
    ".parquet": _read_parquet,
}


def _pick_column(rows: list[dict], names: tuple[str, ...], path: Path) -> str:
    """The first of ``names`` present in the manifest, or an error naming the columns found."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for name in names:
        if name in columns:
            return name
    raise InputError(
        f"Manifest {path} has no '{names[0]}' column (also accepted: {', '.join(names[1:])}); "
        f"columns found: {', '.join(columns) or 'none'}. Rename the column holding the "
        f"{'image paths' if names == PATH_COLUMNS else 'class labels'}."
    )


def _record(row: dict, columns: tuple[str, str], base: Path, where: str) -> ImageRecord:
    path_col, label_col = columns
    raw_path = row.get(path_col)
    if raw_path is None or str(raw_path).strip() == "":
        raise InputError(f"{where}: empty '{path_col}'; every row needs an image path.")
    label = label_text(row.get(label_col), where, label_col)
    path = Path(str(raw_path).strip())
    full = path if path.is_absolute() else base / path
    rec_id = row.get("id")
    if rec_id is None or str(rec_id).strip() == "":
        try:
            rec_id = full.relative_to(base).as_posix()
        except ValueError:
            rec_id = full.as_posix()
    captions = parse_captions(row.get("captions"), where)
    return ImageRecord(id=str(rec_id).strip(), path=full, label=label, captions=captions)


def read_manifest_rows(path: str | os.PathLike, encoding: str | None = None) -> list[dict]:
    """The rows of a ``.csv``, ``.jsonl`` or ``.parquet`` manifest as dicts (at least one), unvalidated.

    ``encoding``: of a text manifest (None: its byte-order mark, else UTF-8; see ``mcip.data.textfile``)."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"Unknown manifest type '{path.suffix}' ({path}); use one of {', '.join(_READERS)}.")
    if not path.is_file():
        raise InputError(f"Manifest not found: {path}.")
    rows = reader(path, encoding)
    if not rows:
        raise InputError(f"Manifest {path} has no rows.")
    return rows


def read_manifest(
    path: str | os.PathLike, root: str | os.PathLike | None = None, encoding: str | None = None
) -> list[ImageRecord]:
    """Records from a ``.csv``, ``.jsonl`` or ``.parquet`` manifest (columns in the module docstring)."""
    path = Path(path)
    rows = read_manifest_rows(path, encoding)
    columns = (_pick_column(rows, PATH_COLUMNS, path), _pick_column(rows, LABEL_COLUMNS, path))
    base = Path(root) if root is not None else path.parent
    records = [_record(row, columns, base, f"{path}, row {i + 1}") for i, row in enumerate(rows)]
    warn_mixed_labels(((f"row {i + 1}", row.get(columns[1])) for i, row in enumerate(rows)), path)
    check_unique_ids(records, path)
    return records


def read_image_folder(root: str | os.PathLike) -> list[ImageRecord]:
    """One record per image under ``root``; the class is the first sub-folder (``root/CLASS/.../x.jpg``)."""
    root = Path(root)
    records, loose = [], []
    for path in find_images(root):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            loose.append(rel)
            continue
        records.append(ImageRecord(id=rel.as_posix(), path=path, label=rel.parts[0]))
    if loose:
        raise InputError(
            f"{len(loose)} image(s) directly in {root} (e.g. {loose[0]}) have no class: "
            "move each image into a sub-folder named after its class (root/CLASS/image.jpg)."
        )
    return records


def is_shard_source(source: str | os.PathLike) -> bool:
    """True for a webdataset shard pattern: a ``.tar`` path, a brace range or a glob."""
    text = os.fspath(source)
    return text.endswith(".tar") or any(ch in text for ch in "{*?[")


def load_records(
    source: str | os.PathLike, root: str | os.PathLike | None = None, encoding: str | None = None
) -> list[ImageRecord]:
    """Records from a manifest file, an image folder or webdataset shards (``shards-{0000..0099}.tar``).

    For shards, each record's ``path`` is ``SHARD#KEY``, the sample inside its shard
    (see ``read_shard_records``).
    ``encoding``: of a CSV / JSONL manifest (default: detected, see ``mcip.data.textfile``).
    """
    path = Path(source)
    if path.suffix.lower() in _READERS:
        return read_manifest(path, root, encoding)
    if path.is_dir():
        return read_image_folder(path)
    if is_shard_source(source):
        from mcip.data.webdataset import list_shards, read_shard_records

        return read_shard_records(list_shards(source))
    raise InputError(
        f"Cannot read training data from {source}: expected a manifest ({', '.join(_READERS)}), "
        "an image folder (root/CLASS/image.jpg) or webdataset shards (a .tar path, glob or "
        "brace range such as shards-{0000..0099}.tar)."
    )
