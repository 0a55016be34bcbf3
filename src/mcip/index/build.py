"""``build_index`` and ``add_to_index``: encode images, write an index folder atomically.

Both encode into a staging folder first (resumable, see ``mcip.index.encode``), then write the complete
new index into a temporary sibling folder and swap it in (``mcip.index.store``): a crash at any point
leaves the previous index usable, and running the same command again continues the encoding.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcip.data.records import ImageRecord
from mcip.errors import ConfigError, InputError
from mcip.index.backends import Backend, create_backend
from mcip.index.encode import Encoded, encode_records, plan_key
from mcip.index.identity import check_model, model_identity, resolve_model
from mcip.index.lock import index_lock, real_index_dir
from mcip.index.ray_engine import RayOptions, check_engine
from mcip.index.ray_jobs import encode_records_ray
from mcip.index.records import HASH_FIELD, STAT_FIELD, IndexRecord, file_hash, file_stat, load_index_records
from mcip.index.store import MANIFEST, StoredIndex, read_manifest, recover, staging_dir
from mcip.index.write import (
    IDENTITY_KEYS,
    MAX_SKIPPED_LISTED,
    kept_chunks,
    write_appended_index,
    write_new_index,
)
from mcip.models.base import EmbeddingModel

Source = str | os.PathLike | Sequence[ImageRecord | IndexRecord]
_LOAD_OPTIONS = ("precision", "drop_projector")


def _check_args(batch_size: int, num_workers: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}.")


def _load(model: EmbeddingModel | str | os.PathLike, device: str, options: dict) -> EmbeddingModel:
    if isinstance(model, EmbeddingModel):
        return model
    from mcip.models import load_model

    return load_model(model, device=device, **options)


def _check_out_dir(index_dir: Path) -> None:
    """Refuse to replace a folder that is not an index (``--out photos`` must not delete the photos)."""
    recover(index_dir)
    not_index = index_dir.exists() and not (index_dir / MANIFEST).is_file()
    if not_index and (index_dir.is_file() or any(index_dir.iterdir())):
        raise ConfigError(
            f"{index_dir} exists and is not an mcip index; a build replaces its output folder, so "
            "choose a new or empty folder (or an existing index) for --out."
        )


def check_reduced_dim(dim: int | None, model_dim: int | None = None) -> None:
    """``dim`` (``--dim``) must be a positive integer below the model's embedding width."""
    if dim is None:
        return
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"dim must be a positive integer, got {dim!r}.")
    if model_dim is not None and dim >= model_dim:
        raise ConfigError(
            f"dim={dim} does not reduce the model's {model_dim}-d embeddings; use dim < {model_dim}."
        )


def _new_backend(backend: str, factory: str | None, options: dict) -> Backend:
    if backend == "faiss":
        options = {**options, "factory": factory or "Flat"}
    elif factory not in (None, "Flat"):
        raise ConfigError(
            f"factory '{factory}' is a FAISS index structure; the {backend} backend builds its own (drop --factory)."
        )
    return create_backend(backend, **options)


def _encode(
    model, records, index_dir: Path, image_fp: str, batch_size, num_workers, progress, compile=False,
    engine: str = "local", ray_options: RayOptions | None = None,
) -> tuple[Encoded, np.ndarray]:  # fmt: skip
    key = plan_key(image_fp, model.embed_dim, records)
    staging = staging_dir(index_dir)
    if engine == "ray":  # the same Encoded, computed on a Ray cluster (mcip.index.ray_engine)
        encoded, _ = encode_records_ray(
            model, records, staging, key, batch_size, progress, compile, ray_options
        )
        return encoded, encoded.readable
    encoded = encode_records(model, records, staging, key, batch_size, num_workers, progress, compile)
    return encoded, encoded.readable


def _nothing_readable(encoded: Encoded, n: int) -> InputError:
    examples = "; ".join(list(encoded.skipped.values())[:3])
    return InputError(f"None of the {n} images could be read (e.g. {examples}); nothing to index.")


def _summary(
    index_dir: Path, manifest: dict, added: int, encoded: Encoded | None, duplicates: int, start: float
) -> dict:
    skipped = encoded.skipped if encoded is not None else {}
    return {
        "index": str(index_dir),
        "model": manifest["model"],
        "backend": manifest["backend"],
        "factory": manifest["factory"],
        "dim": manifest["dim"],
        "count": manifest["count"],
        "added": added,
        "skipped_unreadable": len(skipped),
        "skipped_duplicates": duplicates,
        "skipped_files": dict(list(skipped.items())[:MAX_SKIPPED_LISTED]),
        "resumed_rows": encoded.resumed_rows if encoded is not None else 0,
        "encode_seconds": round(encoded.seconds, 3) if encoded is not None else 0.0,
        "seconds": round(time.perf_counter() - start, 3),
    }


def build_index(
    model: EmbeddingModel | str | os.PathLike,
    source: Source,
    out_dir: str | os.PathLike,
    factory: str = "Flat",
    backend: str = "faiss",
    batch_size: int = 64,
    progress: bool = True,
    *,
    root: str | os.PathLike | None = None,
    device: str = "cpu",
    num_workers: int = 0,
    model_options: dict[str, Any] | None = None,
    wait: float = 0.0,
    encoding: str | None = None,
    lineage: dict | None = None,
    dim: int | None = None,
    compile: bool = False,
    engine: str = "local",
    ray_options: RayOptions | None = None,
    **backend_options: Any,
) -> dict:
    """Encode the images of ``source`` with ``model`` and write a new index to ``out_dir`` (replacing one).

    Args:
        model: an EmbeddingModel, or a spec / saved model directory loaded with ``model_options``
            (``precision``, ``drop_projector``, backend options such as ``embed_dim``), which are stored
            so that queries load the same model. Prefer a saved directory for trained models: an index
            remembers the spec, and a spec that loads other weights is refused at query time.
        source: an image folder, a manifest (``root``: where its relative paths start; ``encoding``: of a
            CSV / JSONL one, default detected) or records.
        factory: FAISS index factory string (``Flat`` = exact; ``HNSW32``, ``IVF4096,PQ64``, ...).
        backend: ``faiss`` or ``qdrant``; ``backend_options`` go to it (FAISS: ``search_params``,
            ``train_size``, ``seed``; Qdrant: ``url``, ``api_key``, ``collection``, ``prefer_grpc``, ``timeout``).
        num_workers: DataLoader processes decoding images (0: in this process).
        compile: run the image tower through ``torch.compile`` (:mod:`mcip.models.compiled`: tens of
            seconds to compile, then a faster forward pass; for large collections).
        wait: seconds to wait while another process writes ``out_dir`` (``math.inf``: no limit); then
            :class:`~mcip.index.lock.IndexBusyError` naming the writer. Every writer holds the lock.
        lineage: when this build is a new version of an index (``rebuild_index``): its history and
            creation time, kept in the new manifest (see ``mcip.index.write.write_new_index``).
        dim: FAISS only: project the vectors on their top ``dim`` principal directions (uncentred, see
            ``mcip.index.backends.faiss_backend.reduce_for_inner_product``) before ``factory``: a smaller
            index, a lower recall, scores that approximate the inner product. The float16 store keeps the
            full embeddings (id queries, filters, remove and rebuild use them).
        engine: ``local`` (this process, ``num_workers`` decoding) or ``ray``: decoding and the model on a
            Ray cluster described by ``ray_options`` (:mod:`mcip.index.ray_engine`; the same index,
            resumable by shard).

    Returns:
        A summary: ``count``, ``added``, ``skipped_unreadable``, ``skipped_files`` (path -> reason, the
        first 100), ``resumed_rows`` (rows an interrupted run had encoded), ``seconds``, ...
    """
    start = time.perf_counter()
    _check_args(batch_size, num_workers)
    check_engine(engine, ray_options)
    if dim is not None:
        if backend != "faiss":
            raise ConfigError(f"dim is a FAISS transform; the {backend} backend stores full vectors.")
        check_reduced_dim(dim)
        backend_options = {**backend_options, "dim": dim}
    index_dir = real_index_dir(out_dir)  # once: a symlink or a .. spelling names the same index
    store = _new_backend(backend, factory, backend_options)
    records = load_index_records(source, root, encoding)
    _check_out_dir(index_dir)  # before a lock file is created next to a folder that is not an index
    with index_lock(index_dir, wait):
        _check_out_dir(index_dir)
        options = dict(model_options or {})
        model = _load(model, device, options)
        check_reduced_dim(dim, model.embed_dim)  # below the model's width: fail before encoding
        store.check(model.embed_dim)
        identity = model_identity(model, {k: v for k, v in options.items() if k not in _LOAD_OPTIONS})
        encoded, ok = _encode(
            model, records, index_dir, identity["image_fingerprint"], batch_size, num_workers, progress,
            compile, engine, ray_options,
        )  # fmt: skip
        kept = _with_hashes(records, ok, encoded)
        if not kept:
            raise _nothing_readable(encoded, len(records))
        chunks = kept_chunks(encoded.embeddings, ok)
        manifest = write_new_index(index_dir, store, kept, chunks, identity, encoded.skipped, start, lineage)
    return _summary(index_dir, manifest, len(kept), encoded, 0, start)


def index_embeddings(
    embeddings: np.ndarray,
    source: Source,
    out_dir: str | os.PathLike,
    model: EmbeddingModel | None = None,
    factory: str = "Flat",
    backend: str = "faiss",
    wait: float = 0.0,
    **backend_options: Any,
) -> dict:
    """Write an index of precomputed (N, D) L2-normalised ``embeddings`` for the N records of ``source``.

    With ``model`` (the one that produced them) the index is complete; without one it has no model
    identity and opens only with ``SearchIndex.open(..., load_model=False)`` (vector and id queries).
    """
    start = time.perf_counter()
    records = load_index_records(source)
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(records) or not len(records):
        raise InputError(
            f"Expected ({len(records)}, D) embeddings for {len(records)} records, got {embeddings.shape}."
        )
    store = _new_backend(backend, factory, backend_options)
    store.check(embeddings.shape[1])
    if model is not None:
        identity = model_identity(model)
    else:
        identity = {
            "model": None,
            "model_options": {},
            "model_backend": None,
            "fingerprint": None,
            "image_fingerprint": None,
            "text_fingerprint": None,
            "normalized": True,
        }
    identity["dim"] = int(embeddings.shape[1])
    chunks = (embeddings[lo : lo + 65_536] for lo in range(0, len(records), 65_536))
    index_dir = real_index_dir(out_dir)
    with index_lock(index_dir, wait):
        _check_out_dir(index_dir)
        manifest = write_new_index(index_dir, store, records, chunks, identity, {}, start)
    return _summary(index_dir, manifest, len(records), None, 0, start)


def add_to_index(
    index_dir: str | os.PathLike,
    source: Source,
    model: EmbeddingModel | str | os.PathLike | None = None,
    batch_size: int = 64,
    progress: bool = True,
    *,
    root: str | os.PathLike | None = None,
    device: str = "cpu",
    num_workers: int = 0,
    wait: float = 0.0,
    encoding: str | None = None,
    compile: bool = False,
    engine: str = "local",
    ray_options: RayOptions | None = None,
    **backend_options: Any,
) -> dict:
    """Append the images of ``source`` whose ids the index lacks (the others are counted as duplicates).

    ``model`` defaults to the one the index was built with; another model is refused unless its image
    tower is the same. ``backend_options`` override the stored ones for this run (e.g. ``api_key``).
    ``wait``, ``encoding``, ``compile``, ``engine`` and ``ray_options``: as in :func:`build_index` (the lock
    is held from reading the index to swapping in the new version, so concurrent adds queue and none is
    lost). Returns the summary of :func:`build_index`.
    """
    start = time.perf_counter()
    _check_args(batch_size, num_workers)
    check_engine(engine, ray_options)
    index_dir = real_index_dir(index_dir)
    read_manifest(index_dir)  # not an index: fail before creating a lock file next to it
    records = load_index_records(source, root, encoding)
    with index_lock(index_dir, wait):
        return _add_locked(index_dir, records, model, batch_size, progress, device, num_workers,
                           backend_options, start, compile, engine, ray_options)  # fmt: skip


def _with_hashes(records, ok: np.ndarray, encoded: Encoded) -> list[IndexRecord]:
    """The readable records, each with the content hash of the file as it was encoded."""
    out = []
    for row, (r, keep) in enumerate(zip(records, ok, strict=True)):
        if keep:
            digest, stat = encoded.hashes.get(row, (None, None))
            out.append(
                dataclasses.replace(r, content_hash=digest, content_stat=tuple(stat) if stat else None)
            )
    return out


def _changed(stored: StoredIndex, records) -> list:
    """Records of ids the index holds whose file's bytes differ from when they were indexed: a file with the
    stored size and modification time is not re-read; another is hashed and compared (ids indexed without a
    hash, by an older mcip, count as unchanged; a file that cannot be read now stays as it is)."""
    out = []
    for r in records:
        row = stored.row_of.get(r.id)
        if row is None:
            continue
        stored_row = stored.row_json(row)
        before = stored_row.get(HASH_FIELD)
        if before is None:
            continue
        try:
            if file_stat(r.path) == stored_row.get(STAT_FIELD):
                continue  # same size and modification time: not re-read
            if file_hash(r.path) != before:
                out.append(r)
        except OSError:
            continue
    return out


def _add_locked(
    index_dir: Path, records, model, batch_size, progress, device, num_workers, backend_options, start,
    compile=False, engine="local", ray_options=None,
) -> dict:  # fmt: skip
    stored = StoredIndex(index_dir)
    encoded, kept, replaced = None, [], []
    try:
        manifest = dict(stored.manifest)
        changed = _changed(stored, records)
        changed_ids = {r.id for r in changed}
        new = [r for r in records if r.id not in stored.row_of] + changed
        duplicates = len(records) - len(new)
        if not new:
            return _summary(index_dir, manifest, 0, None, duplicates, start)
        model = resolve_model(model, manifest, device)
        check_model(model, manifest, index_dir)
        store = create_backend(manifest["backend"], **{**manifest["backend_options"], **backend_options})
        store.state = dict(manifest.get("backend_state", {}))
        encoded, ok = _encode(
            model, new, index_dir, manifest["image_fingerprint"], batch_size, num_workers, progress, compile,
            engine, ray_options,
        )  # fmt: skip
        kept = _with_hashes(new, ok, encoded)
        replaced = [r for r in kept if r.id in changed_ids]
        if replaced:  # a new version: the unchanged rows as stored, then every encoded row
            manifest = _write_replacing(
                stored, store, kept, encoded, ok, manifest, {r.id for r in replaced}, start
            )
        elif kept:
            chunks = kept_chunks(encoded.embeddings, ok)
            manifest = write_appended_index(
                stored, store, kept, chunks, manifest, encoded.skipped, duplicates, start
            )
        else:  # nothing new is readable: the index stays as it is
            shutil.rmtree(staging_dir(index_dir), ignore_errors=True)
    finally:
        stored.close()
    summary = _summary(index_dir, manifest, len(kept) - len(replaced), encoded, duplicates, start)
    return {**summary, "replaced": len(replaced)}


def _write_replacing(
    stored: StoredIndex, store, kept, encoded, ok, manifest: dict, replaced: set, start
) -> dict:
    old_rows = np.asarray([row for i, row in stored.row_of.items() if i not in replaced], dtype=np.int64)
    old_rows.sort()
    records = [stored.record(int(r)) for r in old_rows] + kept

    def chunks():
        for lo in range(0, len(old_rows), 65_536):
            yield np.asarray(stored.embeddings[old_rows[lo : lo + 65_536]])
        yield from kept_chunks(encoded.embeddings, ok)

    identity = {k: manifest.get(k) for k in IDENTITY_KEYS}
    lineage = {"history": manifest.get("history", []), "created": manifest.get("created"), "op": "add"}
    lineage["entry"] = {"replaced": len(replaced)}
    new = write_new_index(stored.dir, store, records, chunks(), identity, encoded.skipped, start, lineage)
    shutil.rmtree(staging_dir(stored.dir), ignore_errors=True)
    return new
