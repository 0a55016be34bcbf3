"""``--engine ray``: the encoding of ``mcip encode``, ``mcip index build|add|rebuild`` and ``mcip captions
retrieve`` on a Ray cluster.

Only where batches are computed differs from the local path (``mcip.index.encode`` / ``mcip.embed``):

- the driver (this process) cuts the records into **shards** of ``shard_size`` consecutive rows (fixed by
  the plan) and each shard into the local path's batches of ``batch_size`` rows;
- **CPU tasks** decode a batch with the local path's own code (``mcip.index.encode._Rows``: decoding under
  the image limits, the eval transform, content hashes; ``mcip.data.dataset.decode_image`` for
  ``mcip encode``), unreadable images becoming error texts, never exceptions;
- an **actor pool** (Ray Data ``map_batches`` with a callable class; one GPU per actor where the cluster has
  GPUs, one CPU otherwise) runs the model on each batch's readable images: the same batches as the local
  path, so the same embeddings;
- texts (a caption pool) skip the decoding tasks: the actors tokenize and encode the local path's batches;
- the driver receives the batches in record order and writes each finished shard atomically
  (``mcip._io.atomic_open``) into the job's staging folder; a killed job run again redoes only the shards
  that are not on disk. The shards are then assembled in row order, and the caller writes the index (FAISS
  training, Qdrant upserts) exactly as the local path does.

Staging layout (the index's ``.NAME.staging`` folder, or a folder next to ``mcip encode --out``)::

    plan.json          {"key", "n", "dim", "engine": "ray", "shard_size"}
    shards/000000.npz  "embeddings" (rows, D) float32 (NaN rows: unreadable), "meta" JSON: errors, hashes
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import pickle
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcip._io import atomic_open, atomic_write_json
from mcip.errors import ConfigError, require
from mcip.models.base import EmbeddingModel

ENGINES = ("local", "ray")
DEFAULT_SHARD_ROWS = 4096
DECODE_WORKER_BYTES = 768 * 2**20  # a decoding task's process (Python, torch, PIL): ~624 MiB measured


@dataclass
class RayOptions:
    """Where and how ``--engine ray`` runs.

    address: a running cluster (``ray start --head`` prints it; ``auto``: the one on this machine);
        None starts a local cluster with ``num_cpus`` CPUs (default: all) for this job.
    shard_size: records per shard, the unit of resumption (a multiple of the batch size; default: the
        multiple of the batch size nearest above 4096).
    actors: model replicas (default: one per GPU of the cluster, else half its CPUs, at least 1; the
        other CPUs decode).
    """

    address: str | None = None
    num_cpus: int | None = None
    shard_size: int | None = None
    actors: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_cpus", "shard_size", "actors"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"ray {name} must be a positive integer, got {value!r}.")
        if self.address is not None and self.num_cpus is not None:
            raise ConfigError(
                "num_cpus sizes a local Ray cluster; a running cluster (address) has its own: drop one."
            )

    def shard_rows(self, batch_size: int) -> int:
        if self.shard_size is None:
            return batch_size * math.ceil(DEFAULT_SHARD_ROWS / batch_size)
        if self.shard_size % batch_size:
            raise ConfigError(
                f"shard_size={self.shard_size} is not a multiple of batch_size={batch_size}; a shard holds "
                f"whole batches (e.g. shard_size={batch_size * max(1, self.shard_size // batch_size)})."
            )
        return self.shard_size


def check_engine(engine: str, ray: RayOptions | None) -> None:
    """``engine`` is one of :data:`ENGINES`; ``ray`` options only go with the ray engine."""
    if engine not in ENGINES:
        raise ConfigError(f"Unknown engine '{engine}'; choose one of {', '.join(ENGINES)}.")
    if ray is not None and engine != "ray":
        raise ConfigError("Ray options (address, shard size, actors) need engine='ray'.")


@dataclass
class Sharded:
    """What a ray job computed: its finished shard files in row order, and which were computed now."""

    shards: list[Path]
    computed: list[int] = field(default_factory=list)
    resumed_rows: int = 0
    seconds: float = 0.0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, dict[int, str], dict[int, tuple]]]:
        """(first row, (rows, D) float32 embeddings with NaN rows, row -> error, row -> (hash, stat))."""
        lo = 0
        for path in self.shards:
            with np.load(path) as data:
                emb, meta = data["embeddings"], json.loads(str(data["meta"]))
            errors = {int(r): e for r, e in meta["errors"].items()}
            hashes = {int(r): (h, list(stat)) for r, (h, stat) in meta["hashes"].items()}
            yield lo, emb, errors, hashes
            lo += len(emb)


def _decode(item: dict, transform, hash_files: bool) -> dict:
    """A Ray task: decode one batch of records with the local path's code; never raises on a bad image."""
    import torch

    from mcip.data.dataset import decode_image
    from mcip.index.encode import _Rows

    records = pickle.loads(item["records"])
    pixels, rows, errors, hashes = [], [], {}, {}
    for i, record in enumerate(records):
        row = int(item["lo"]) + i
        if hash_files:
            _, decoded, error, digest = _Rows(records, 0, transform)[i]
        else:
            path = getattr(record, "path", record)  # mcip encode ships plain paths
            decoded = decode_image(path, transform, str(path))
            error, digest = (decoded, None) if isinstance(decoded, str) else (None, None)
        if error is not None:
            errors[row] = error
            continue
        pixels.append(decoded)
        rows.append(row)
        if digest is not None:
            hashes[row] = (digest[0], list(digest[1]))
    batch = torch.stack(pixels).numpy() if pixels else None
    payload = {"rows": rows, "pixels": batch, "errors": errors, "hashes": hashes}
    return {"chunk": item["chunk"], "payload": pickle.dumps(payload, protocol=5)}


class _Encoder:
    """A Ray actor: the model, on this actor's GPU where it has one; ``__call__`` encodes one batch."""

    def __init__(self, model: EmbeddingModel, compile: bool, batch_size: int, dim: int) -> None:
        import torch

        from mcip.models.compiled import image_encoder

        if torch.cuda.is_available():
            model.net.to("cuda")
        self.model, self.encode = model, image_encoder(model, compile, batch_size)
        self.dim = dim

    def __call__(self, batch: dict) -> dict:
        import torch

        payloads = []
        for raw in batch["payload"]:
            data = pickle.loads(raw)
            emb = np.zeros((0, self.dim), np.float32)
            with torch.no_grad():
                if data.get("texts"):
                    emb = self.model.encode_text(data["texts"]).float().cpu().numpy()
                elif data.get("pixels") is not None:
                    emb = self.encode(torch.from_numpy(data["pixels"])).float().cpu().numpy()
            out = {
                "rows": data["rows"],
                "embeddings": emb,
                "errors": data["errors"],
                "hashes": data["hashes"],
            }
            payloads.append(pickle.dumps(out, protocol=5))
        return {"chunk": np.asarray(batch["chunk"]), "payload": np.asarray(payloads, dtype=object)}


def _plan(staging: Path, plan: dict) -> set[int]:
    """The shards already on disk for ``plan``; a staging folder of another plan is cleared (a warning)."""
    try:
        stored = json.loads((staging / "plan.json").read_text())
    except (OSError, ValueError):
        stored = None
    if stored == plan:
        return {int(p.stem) for p in (staging / "shards").glob("[0-9]*.npz")}
    if stored is not None or staging.exists():
        if stored is not None:
            warnings.warn(
                f"{staging} holds an interrupted job of other images, another model or engine; starting over.",
                stacklevel=3,
            )
        shutil.rmtree(staging, ignore_errors=True)
    (staging / "shards").mkdir(parents=True)
    atomic_write_json(staging / "plan.json", plan, indent=2)
    return set()


def shard_path(staging: Path, shard: int) -> Path:
    return staging / "shards" / f"{shard:06d}.npz"


def write_shard(staging: Path, shard: int, parts: list[dict], lo: int, hi: int, dim: int) -> None:
    """One finished shard (rows ``lo..hi-1``), written atomically: the unit a rerun does not redo."""
    emb = np.full((hi - lo, dim), np.nan, dtype=np.float32)
    errors, hashes = {}, {}
    for part in parts:
        if part["rows"]:
            emb[np.asarray(part["rows"]) - lo] = part["embeddings"]
        errors.update({str(r): e for r, e in part["errors"].items()})
        hashes.update({str(r): h for r, h in part["hashes"].items()})
    meta = json.dumps({"errors": errors, "hashes": hashes})
    with atomic_open(shard_path(staging, shard), "wb") as f:
        np.savez(f, embeddings=emb, meta=np.asarray(meta))


class _Session:
    """Whether jobs run inside :func:`one_session` (then a cluster one of them starts stays up for the
    next) and whether one of them started it."""

    held = False
    started = False


@contextlib.contextmanager
def one_session() -> Iterator[None]:
    """Several :func:`run_sharded` jobs in a row on one Ray connection: the first job that has work starts
    (or joins) the cluster, the next ones reuse it, and it is shut down on exit (if a job started it)."""
    if _Session.held:
        yield
        return
    _Session.held, _Session.started = True, False
    try:
        yield
    finally:
        _Session.held = False
        if _Session.started:
            _Session.started = False
            import ray

            ray.shutdown()


def _connect(ray, options: RayOptions) -> bool:
    """Join ``options.address``, reuse an initialised session, or start a local cluster (True: started)."""
    if ray.is_initialized():
        return False
    kwargs = {"logging_level": logging.WARNING, "include_dashboard": False}
    if options.address is not None:
        ray.init(address=options.address, **kwargs)
    else:
        ray.init(num_cpus=options.num_cpus, **kwargs)
    return True


def _pool(ray, options: RayOptions) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per GPU of the cluster, else half its CPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return options.actors or gpus, 1.0
    return options.actors or max(1, int(resources.get("CPU", 1)) // 2), 0.0


def _cpu_copy(model: EmbeddingModel) -> EmbeddingModel:
    """What is shipped to the actors: the model on the CPU (an actor moves it to its GPU)."""
    if model.device.type == "cpu":
        return model
    import copy

    clone = copy.deepcopy(model)
    clone.net.to("cpu")
    return clone


def run_sharded(
    model: EmbeddingModel,
    records: Sequence,
    staging: Path,
    key: str,
    batch_size: int,
    options: RayOptions | None = None,
    progress: bool = True,
    compile: bool = False,
    hash_files: bool = True,
    texts: bool = False,
) -> Sharded:
    """Encode ``records`` (objects with a ``.path``, paths, or with ``texts`` strings) on Ray into ``staging``
    (see the module docstring), resuming the shards of an earlier run of the same plan (``key``: the
    inputs and the tower that encodes them)."""
    from tqdm.auto import tqdm

    options = options or RayOptions()
    start = time.perf_counter()
    n, dim, size = len(records), int(model.embed_dim), options.shard_rows(batch_size)
    plan = {"key": key, "n": n, "dim": dim, "engine": "ray", "shard_size": size}
    done = _plan(staging, plan)
    todo = [s for s in range(math.ceil(n / size)) if s not in done]
    resumed = sum(min(size, n - s * size) for s in done)
    computed = []
    if todo:
        ray = require("ray", "ray", "The ray engine (--engine ray)")
        started = _connect(ray, options)
        try:
            what, unit = ("texts", "text") if texts else ("images", "img")
            bar = tqdm(
                total=n, initial=resumed, desc=f"encoding {what} (ray)", unit=unit, disable=not progress
            )
            with bar:
                for shard in _stream(ray, model, records, staging, todo, size, batch_size, options, compile,
                                     hash_files, bar, texts):  # fmt: skip
                    computed.append(shard)
        finally:
            if started and _Session.held:
                _Session.started = True  # one_session shuts it down
            elif started:
                ray.shutdown()
    shards = [shard_path(staging, s) for s in range(math.ceil(n / size))]
    return Sharded(shards, computed, resumed, time.perf_counter() - start)


def _chunks(
    records: Sequence, todo: list[int], size: int, batch_size: int, n: int, texts: bool
) -> list[dict]:
    """One item per batch: its records pickled for a decoding task, or for texts the actors' payload."""
    items = []
    for shard in todo:
        for lo in range(shard * size, min(n, (shard + 1) * size), batch_size):
            hi = min(n, lo + batch_size)
            item = {"chunk": len(items), "shard": shard, "lo": lo, "hi": hi}
            if texts:
                payload = {
                    "rows": list(range(lo, hi)),
                    "texts": list(records[lo:hi]),
                    "errors": {},
                    "hashes": {},
                }
                item["payload"] = pickle.dumps(payload, protocol=5)
            else:
                item["records"] = pickle.dumps(list(records[lo:hi]), protocol=5)
            items.append(item)
    return items


def _stream(ray, model, records, staging, todo, size, batch_size, options, compile, hash_files, bar, texts):
    """Run the pipeline on the unfinished shards; yield each shard once it is written, in order."""
    n, dim = len(records), int(model.embed_dim)
    items = _chunks(records, todo, size, batch_size, n, texts)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # batches come back in record order
    context.enable_progress_bars = False
    actors, gpus = _pool(ray, options)
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # one batch per block
    if not texts:
        # Decoding reserves a worker's memory and a batch of float32 pixels: resources unlike the actors',
        # so Ray does not fuse the two stages and decoding runs in tasks of its own, beside the model.
        ds = ds.map(
            _decode,
            fn_kwargs={"transform": model.eval_transform, "hash_files": hash_files},
            num_cpus=1,
            memory=DECODE_WORKER_BYTES + batch_size * 3 * model.image_size**2 * 4,
        )
    ds = ds.map_batches(
        _Encoder,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus,
        num_cpus=0 if gpus else 1,
        fn_constructor_kwargs={
            "model": _cpu_copy(model), "compile": compile, "batch_size": batch_size, "dim": dim
        },
    )  # fmt: skip
    remaining = {s: sum(1 for it in items if it["shard"] == s) for s in todo}
    parts: dict[int, list] = {s: [] for s in todo}
    for row in ds.iter_rows():
        item = items[int(row["chunk"])]
        shard = item["shard"]
        parts[shard].append(pickle.loads(row["payload"]))
        bar.update(item["hi"] - item["lo"])
        remaining[shard] -= 1
        if remaining[shard] == 0:
            lo, hi = shard * size, min(n, (shard + 1) * size)
            write_shard(staging, shard, parts.pop(shard), lo, hi, dim)
            yield shard
