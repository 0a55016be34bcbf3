"""Pseudo-captions by retrieval from a caption pool (what the authors did with CC12M alt-texts):
embed the pool and the training images with a CLIP model, keep per image the top-k captions whose cosine
similarity is at least ``min_sim`` (SPEC section 4: top-20 above 0.27).

The pool (a text file, a CSV / Parquet / JSONL column) is streamed in chunks and deduplicated by exact
string; its embeddings go to the on-disk feature cache (memory-mapped, resumable), as do the image
embeddings. Top-k is exact, computed pool chunk by pool chunk against all images; with
``backend="faiss"`` (``pip install 'mcip[index]'``) a FAISS index (any factory string) searches instead.

``engine="ray"`` computes the same two sets of embeddings on a Ray cluster instead
(:mod:`mcip.index.ray_engine`: decoding in CPU tasks, the model in an actor pool, the local path's
batches), resumable by shard in a staging folder next to the output (``.OUT.ray-staging``, removed once the
sidecar is written; the feature cache is the local engine's); the selection that follows is the same code.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mcip.data.captions import read_caption_sidecar, write_caption_sidecar
from mcip.data.records import ImageRecord
from mcip.embed import cached_image_embeddings, cached_text_embeddings, default_cache_dir
from mcip.errors import ConfigError, InputError, require
from mcip.models.base import EmbeddingModel

TEXT_COLUMNS = ("caption", "text", "alt", "alt_text", "sentence")


@dataclass
class RetrieveSummary:
    images: int
    skipped_done: int  # already in the output (resumed)
    unreadable: list[str] = field(default_factory=list)
    pool_lines: int = 0
    pool_unique: int = 0
    captions_written: int = 0
    without_captions: int = 0
    seconds: float = 0.0


def _column(names: Sequence[str], column: str | None, path: Path) -> str:
    if column:
        if column not in names:
            raise InputError(f"{path} has no column '{column}'; its columns are {list(names)}.")
        return column
    for name in TEXT_COLUMNS:
        if name in names:
            return name
    raise InputError(f"{path}: say which column holds the captions (--column); found {list(names)}.")


def iter_pool(
    path: str | os.PathLike, column: str | None = None, chunk_size: int = 100_000
) -> Iterator[list[str]]:
    """Caption strings of a pool file in chunks: ``.txt`` (one per line), ``.csv``, ``.jsonl``, ``.parquet``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Caption pool not found: {path}.")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq = require("pyarrow.parquet", "data", "Parquet caption pools")
        file = pq.ParquetFile(path)
        name = _column(file.schema_arrow.names, column, path)
        for batch in file.iter_batches(batch_size=chunk_size, columns=[name]):
            yield [str(v) for v in batch.column(0).to_pylist() if v is not None]
        return
    with open(path, encoding="utf-8", newline="") as f:
        if suffix == ".csv":
            reader = csv.DictReader(f)
            name = _column(reader.fieldnames or [], column, path)
            rows = (row[name] for row in reader)
        elif suffix == ".jsonl":
            rows = (_jsonl_text(line, column, path) for line in f if line.strip())
        else:
            rows = (line.rstrip("\n") for line in f)
        chunk: list[str] = []
        for text in rows:
            chunk.append(text)
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _jsonl_text(line: str, column: str | None, path: Path) -> str:
    obj = json.loads(line)
    return str(obj[_column(list(obj), column, path)])


def load_pool(path: str | os.PathLike, column: str | None = None) -> tuple[list[str], int]:
    """(unique stripped non-empty captions in first-seen order, number of lines read)."""
    seen: set[bytes] = set()
    unique: list[str] = []
    lines = 0
    for chunk in iter_pool(path, column):
        lines += len(chunk)
        for text in chunk:
            text = " ".join(text.split())
            digest = hashlib.blake2b(text.encode(), digest_size=12).digest()
            if text and digest not in seen:
                seen.add(digest)
                unique.append(text)
    if not unique:
        raise InputError(f"The caption pool {path} holds no non-empty captions.")
    return unique, lines


def exact_top_k(
    images: torch.Tensor, pool: np.ndarray, k: int, pool_chunk: int = 65_536, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k) best cosine scores and pool indices per image, exact; the pool is read once, in chunks.

    Ties keep the lower pool index. ``images`` (N, D) and ``pool`` (M, D) are L2-normalised.
    """
    n, k = images.shape[0], min(k, len(pool))
    best = torch.full((n, k), -float("inf"))
    index = torch.full((n, k), -1, dtype=torch.long)
    for start in tqdm(range(0, len(pool), pool_chunk), desc="searching the pool", disable=not progress):
        block = torch.from_numpy(np.asarray(pool[start : start + pool_chunk], dtype=np.float32))
        scores = images @ block.T
        cand = torch.cat([best, scores], 1)
        ids = torch.cat([index, torch.arange(start, start + len(block)).expand(n, -1)], 1)
        order = torch.sort(-cand, dim=1, stable=True).indices[:, :k]
        best, index = cand.gather(1, order), ids.gather(1, order)
    return best, index


def faiss_top_k(images: torch.Tensor, pool: np.ndarray, k: int, factory: str = "Flat", chunk: int = 65_536):
    """The same search through a FAISS inner-product index built with ``factory`` (e.g. ``IVF4096,PQ64``)."""
    faiss = require("faiss", "index", "FAISS caption search")
    index = faiss.index_factory(pool.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        sample = np.asarray(pool[: min(len(pool), 200_000)], dtype=np.float32)
        index.train(sample)
    for start in range(0, len(pool), chunk):
        index.add(np.asarray(pool[start : start + chunk], dtype=np.float32))
    scores, ids = index.search(images.numpy().astype(np.float32), min(k, len(pool)))
    return torch.from_numpy(scores), torch.from_numpy(ids).long()


def retrieve_captions(
    model: EmbeddingModel,
    records: Sequence[ImageRecord],
    pool_path: str | os.PathLike,
    out: str | os.PathLike,
    top_k: int = 20,
    min_sim: float = 0.27,
    column: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    backend: str = "exact",
    faiss_factory: str = "Flat",
    progress: bool = True,
    engine: str = "local",
    ray_options=None,
    batch_size: int = 64,
    text_batch_size: int = 256,
) -> RetrieveSummary:
    """Append, per record not yet in ``out``, its top-``top_k`` pool captions with cosine >= ``min_sim``
    (``{"text", "source": "retrieval:<pool file>", "score"}``, best first); an image without any
    caption above the threshold gets an empty list. Unreadable images are reported, not written.

    ``engine``: ``local`` (this process; embeddings in the feature cache ``cache_dir``) or ``ray`` (a Ray
    cluster described by ``ray_options``, a :class:`~mcip.index.ray_engine.RayOptions`; see the module
    docstring; its ``shard_size`` counts images, the pool is cut into shards of about 4096 captions).
    ``batch_size`` / ``text_batch_size``: images / captions encoded per batch by either engine.
    """
    if top_k < 1 or backend not in ("exact", "faiss"):
        raise ConfigError(f"Need top_k >= 1 and backend 'exact' or 'faiss'; got {top_k}, {backend!r}.")
    if batch_size < 1 or text_batch_size < 1:
        raise ConfigError(
            f"Need batch sizes >= 1; got batch_size={batch_size}, text_batch_size={text_batch_size}."
        )
    _check_engine(engine, ray_options, cache_dir, batch_size)
    start, cache = time.perf_counter(), Path(cache_dir) if cache_dir else default_cache_dir()
    done = set(read_caption_sidecar(out)) if Path(out).is_file() else set()
    todo = [r for r in records if r.id not in done]
    summary = RetrieveSummary(images=len(records), skipped_done=len(records) - len(todo))
    if not todo:
        return summary
    texts, summary.pool_lines = load_pool(pool_path, column)
    summary.pool_unique = len(texts)
    paths = [r.path for r in todo]
    if engine == "ray":
        pool, images = _embed_on_ray(model, texts, paths, ray_staging(out), batch_size, text_batch_size,
                                     progress, ray_options)  # fmt: skip
    else:
        pool = cached_text_embeddings(model, texts, cache, text_batch_size, desc="embedding the caption pool")
        images = cached_image_embeddings(model, paths, cache, batch_size)
    emb = torch.from_numpy(np.asarray(images, dtype=np.float32))
    readable = ~torch.isnan(emb[:, 0])
    summary.unreadable = [str(r.path) for r, ok in zip(todo, readable.tolist(), strict=True) if not ok]
    todo, emb = [r for r, ok in zip(todo, readable.tolist(), strict=True) if ok], emb[readable]
    search = faiss_top_k if backend == "faiss" else exact_top_k
    kwargs = {"factory": faiss_factory} if backend == "faiss" else {"progress": progress}
    scores, ids = search(emb, pool, top_k, **kwargs)
    source = f"retrieval:{Path(pool_path).name}"
    batch: dict[str, list[dict]] = {}
    for record, row_scores, row_ids in zip(todo, scores.tolist(), ids.tolist(), strict=True):
        kept = [
            {"text": texts[i], "source": source, "score": round(s, 4)}
            for s, i in zip(row_scores, row_ids, strict=True)
            if i >= 0 and s >= min_sim
        ]
        batch[record.id] = kept
        summary.captions_written += len(kept)
        summary.without_captions += not kept
        if len(batch) >= 1000:
            write_caption_sidecar(out, batch)
            batch = {}
    if batch:
        write_caption_sidecar(out, batch)
    if engine == "ray":
        del pool, images  # memory maps of the staging folder's files
        shutil.rmtree(ray_staging(out), ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    return summary


def ray_staging(out: str | os.PathLike) -> Path:
    """Where ``engine="ray"`` keeps its finished shards until the sidecar ``out`` is written."""
    out = Path(out)
    return out.parent / f".{out.name}.ray-staging"


def _check_engine(engine: str, ray_options, cache_dir, batch_size: int) -> None:
    """The engine's name and options, before any work (a shard holds whole batches of images)."""
    if engine == "local" and ray_options is None:
        return
    from mcip.index.ray_engine import check_engine

    check_engine(engine, ray_options)
    if ray_options is not None:
        ray_options.shard_rows(batch_size)
    if cache_dir is not None:
        raise ConfigError(
            "cache_dir (--cache-dir) is the local engine's feature cache; the ray engine keeps its shards in "
            "a staging folder next to the output instead: drop --cache-dir, or drop --engine ray."
        )


def _embed_on_ray(model, texts, paths, staging: Path, batch_size, text_batch_size, progress, options):
    """(pool (T, D), images (N, D)) float16 memory maps computed on Ray (NaN rows: unreadable images)."""
    from mcip.index.ray_engine import one_session
    from mcip.index.ray_jobs import embed_images_ray, embed_texts_ray

    staging.mkdir(parents=True, exist_ok=True)
    # the images are sharded as ``options`` say; the pool in shards of about 4096 captions (whole batches)
    pool_options = dataclasses.replace(options, shard_size=None) if options is not None else None
    with one_session():  # one cluster for both jobs
        pool, _ = embed_texts_ray(model, texts, staging / "pool", text_batch_size, progress, pool_options)
        images, _ = embed_images_ray(model, paths, staging / "images", batch_size, progress, options)
    return pool, images
