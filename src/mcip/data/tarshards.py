"""Reading and writing webdataset-style tar shards with the standard library's tarfile.

A shard is a tar file in which the files of one sample share a key and sit next to each other:
``KEY.jpg`` (or png, webp, ...) and ``KEY.json`` with ``{"label": ..., "captions": [...], "id": ...}``.
The key is the member name up to the first dot of its base name (webdataset's rule). A record read
from shards has ``path = SHARD#KEY`` (:mod:`mcip.data.shard_ref`), which opens like an image file.
"""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from mcip._io import atomic_open
from mcip.data.images import IMAGE_EXTENSIONS, read_image_bytes
from mcip.data.records import ImageRecord, check_unique_ids, parse_captions
from mcip.data.shard_ref import member_ref, split_key
from mcip.errors import ConfigError, InputError

IMAGE_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)


def iter_tar_samples(shard: str | os.PathLike, images: bool = True) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {ext: bytes})`` per sample, streaming; image bytes left empty when ``images=False``.

    Raises ``tarfile.TarError`` / ``OSError`` / ``EOFError`` on a missing or damaged shard, after
    yielding the samples before the damage.
    """
    key, files = None, {}
    with tarfile.open(shard, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            k, ext = split_key(member.name)
            if key is not None and k != key:
                yield key, files
                files = {}
            key = k
            skip = not images and ext in IMAGE_EXTS
            files[ext] = b"" if skip else tar.extractfile(member).read()
    if key is not None:
        yield key, files


def parse_meta(key: str, files: dict[str, bytes], where: str) -> dict | str:
    """``{"id", "label", "captions"}`` from the sample's JSON, or an error text."""
    if "json" not in files:
        return f"{where}: no {key}.json with the label"
    try:
        meta = json.loads(files["json"])
        label = meta.get("label")
        if label is None or str(label).strip() == "":
            return f"{where}: {key}.json has no 'label'"
        captions = parse_captions(meta.get("captions"), where)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, InputError) as exc:
        return f"{where}: bad {key}.json: {exc}"
    return {"id": str(meta.get("id", key)), "label": str(label).strip(), "captions": captions}


def read_shard_records(shards: Sequence[str | os.PathLike]) -> list[ImageRecord]:
    """Records (``path`` = ``SHARD#KEY``, the sample's image inside its shard) from the JSON files only,
    without decoding images, in shard order and tar order within a shard.

    Samples without an image or a valid label are left out with one warning; an unreadable shard
    is an error (listing records should be exact).
    """
    records, bad, first = [], 0, ""
    for shard in shards:
        try:
            for key, files in iter_tar_samples(shard, images=False):
                meta = parse_meta(key, files, f"{shard}:{key}")
                if not any(ext in files for ext in IMAGE_EXTS):
                    meta = f"{shard}:{key}: no image file ({', '.join(IMAGE_EXTS)})"
                if isinstance(meta, str):
                    bad, first = bad + 1, first or meta
                    continue
                records.append(
                    ImageRecord(meta["id"], member_ref(shard, key), meta["label"], meta["captions"])
                )
        except _TAR_ERRORS as exc:
            raise InputError(f"Cannot read shard {shard}: {exc}; re-create or remove it.") from exc
    if bad:
        warnings.warn(
            f"Left out {bad} sample(s) without an image or a valid label (first: {first}).", stacklevel=2
        )
    check_unique_ids(records, "shards")
    return records


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_shard(
    path: Path, records: Sequence[ImageRecord], first_key: int
) -> tuple[list[str], list[tuple[ImageRecord, str]]]:
    """Write one shard atomically: ``(keys written, [(record, reason) whose image could not be read])``.

    Sample ``i`` gets the key ``first_key + i`` (nine digits); a skipped record leaves its key unused.
    """
    keys, skipped = [], []
    with atomic_open(path) as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        for i, rec in enumerate(records):
            try:
                data = read_image_bytes(rec.path)
            except OSError as exc:
                skipped.append((rec, f"{type(exc).__name__}: {exc}"))
                continue
            key = f"{first_key + i:09d}"
            ext = rec.path.suffix.lower().lstrip(".") or "jpg"
            ext = ext if ext in IMAGE_EXTS else "jpg"
            meta = {"id": rec.id, "label": rec.label, "captions": list(rec.captions)}
            _add(tar, f"{key}.{ext}", data)
            _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())
            keys.append(key)
    return keys, skipped


def write_shards(
    records: Sequence[ImageRecord],
    out_dir: str | os.PathLike,
    per_shard: int = 1000,
    prefix: str = "shard",
    shuffle: bool = True,
    seed: int = 0,
) -> list[Path]:
    """Pack image files (bytes copied, not re-encoded) into ``out_dir/PREFIX-000000.tar``, ...

    Records are shuffled first (``seed``) so that a shard mixes classes; the JSON keeps each record's
    id, label and captions. Missing files are left out with a warning. Returns the shard paths.
    """
    if isinstance(per_shard, bool) or not isinstance(per_shard, int) or per_shard < 1:
        raise ConfigError(f"per_shard must be an integer >= 1, got {per_shard!r}.")
    order = list(records)
    if shuffle:
        random.Random(seed).shuffle(order)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, written = [], 0
    for s, start in enumerate(range(0, len(order), per_shard)):
        path = out / f"{prefix}-{s:06d}.tar"
        written += len(_write_shard(path, order[start : start + per_shard], start)[0])
        paths.append(path)
    if written < len(order):
        warnings.warn(
            f"{len(order) - written} of {len(order)} images could not be read and were left out.",
            stacklevel=2,
        )
    return paths
