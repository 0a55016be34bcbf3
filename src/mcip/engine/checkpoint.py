"""Training checkpoints that survive a kill: atomic files, the last K kept plus the best, RNG states.

Layout under ``run_dir/checkpoints/``: ``step_00000500.pt`` ... (the newest ``keep_last``), ``best.pt``
(a hard link to, or a copy of, the best-scoring step file, so it survives pruning) and ``best.json``
(``{"step", "metric"}``). Every file is written to a hidden temporary file in the same folder, fsynced,
then renamed over the target (``os.replace`` is atomic on POSIX), so a reader never sees half a file;
a temporary file left behind by a killed writer is ignored by :meth:`TrainingCheckpoints.latest` and
deleted by the next :meth:`TrainingCheckpoints.save`.

Also here: what a resumed run restores besides the files (:class:`RunPosition`, :class:`Selection`,
every rank's RNG streams via :func:`pack_training_state` / :func:`unpack_training_state`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mcip._io import atomic_open, fsync_dir
from mcip.engine.distributed import all_gather_object, is_main
from mcip.errors import ConfigError, InputError

_STEP_FILE = re.compile(r"^step_(\d{8,})\.pt$")


def _atomic_write(path: Path, write) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        write(handle)
    return path


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save(state)`` to ``path`` atomically (temporary file in the same folder + rename)."""
    return _atomic_write(Path(path), lambda handle: torch.save(state, handle))


def load_state(path: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """Load a state written by :func:`save_state` onto the CPU.

    ``weights_only=True`` (the default) refuses arbitrary pickled objects; the training loop's states
    only hold tensors, numbers, strings and containers of them.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Checkpoint {path} does not exist; check the run folder or start without resume.")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"Checkpoint {path} could not be read ({reason}). If the file is corrupt, delete it to resume "
            "from the previous one; if it holds other pickled objects you trust, pass weights_only=False."
        ) from exc


def _copy_into(src: Path, handle) -> None:
    with open(src, "rb") as source:
        shutil.copyfileobj(source, handle, 16 * 2**20)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a hard link to ``src`` (a copy where links are unsupported), replacing it atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:  # e.g. a filesystem without hard links
        _atomic_write(tmp, lambda handle: _copy_into(src, handle))
    os.replace(tmp, dst)
    fsync_dir(dst.parent)


class TrainingCheckpoints:
    """The checkpoints of one run: ``save`` / ``latest`` / ``best`` under ``run_dir/checkpoints``.

    Args:
        run_dir: the run folder.
        keep_last: how many step files to keep (the best one is kept separately as ``best.pt``).
    """

    def __init__(self, run_dir: str | Path, keep_last: int = 2) -> None:
        if not isinstance(keep_last, int) or keep_last < 1:
            raise ConfigError(f"keep_last must be an int >= 1, got {keep_last!r}.")
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def path_for(self, step: int) -> Path:
        return self.dir / f"step_{step:08d}.pt"

    def steps(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every complete step file, oldest first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _STEP_FILE.match(p.name))]
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest complete step file (temporary files are never complete), or None."""
        found = self.steps()
        return found[-1][1] if found else None

    def best(self) -> Path | None:
        path = self.dir / "best.pt"
        return path if path.is_file() else None

    def best_record(self) -> dict[str, Any] | None:
        """``{"step": int, "metric": float}`` of ``best.pt``, or None."""
        path = self.dir / "best.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, step: int, state: dict[str, Any], metric: float | None = None) -> Path:
        """Write ``step_{step:08d}.pt``; make it ``best.pt`` if ``metric`` beats the best (higher wins)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.dir.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        path = save_state(self.path_for(step), state)
        if metric is not None and self._improves(metric):
            _link_or_copy(path, self.dir / "best.pt")
            record = json.dumps({"step": step, "metric": float(metric)}).encode()
            _atomic_write(self.dir / "best.json", lambda handle: handle.write(record))
        for _, old in self.steps()[: -self.keep_last]:
            old.unlink()
        return path

    def _improves(self, metric: float) -> bool:
        if math.isnan(metric):
            return False
        record = self.best_record()
        return record is None or metric > record["metric"] or self.best() is None


@dataclass
class Selection:
    """Model selection on the validation ``metric`` (higher is better) and early stopping.

    ``update`` after each validation: a new best resets the count of validations without improvement;
    ``stopped`` turns True once that count reaches ``patience`` (None: never). NaN never improves.
    """

    metric: str | None = None
    patience: int | None = None
    best: float | None = None
    best_step: int | None = None
    bad: int = 0
    stopped: bool = False

    def update(self, results: dict[str, float], step: int) -> bool:
        """Record validation ``results`` (keys as validate() returned them); True on a new best."""
        if self.metric is None:
            return False
        if self.metric not in results:
            raise ConfigError(
                f"val_metric {self.metric!r} is not among the validation results {sorted(results)}; "
                "pass one of those names."
            )
        value = results[self.metric]
        if not math.isnan(value) and (self.best is None or value > self.best):
            self.best, self.best_step, self.bad = value, step, 0
            return True
        self.bad += 1
        self.stopped = self.patience is not None and self.bad >= self.patience
        return False


@dataclass
class RunPosition:
    """Where a run stands: after optimizer step ``step``, the next batch is ``batch_in_epoch`` of
    ``epoch``; ``last_val_step`` avoids validating twice at one step; ``seconds`` of training so far."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    last_val_step: int = -1
    seconds: float = 0.0


def pack_training_state(
    task: nn.Module, opt: Any, fields: dict[str, Any], rank_fields: dict[str, Any], gather: bool = True
) -> dict[str, Any] | None:
    """What a resumed run needs, on rank 0 (None elsewhere).

    Keys: ``task`` (its state_dict), the entries of ``opt.state_dict()`` (optimizer, scheduler,
    scaler), ``fields`` (position, selection, configs), and ``ranks``: every rank's RNG streams plus
    its ``rank_fields``. ``gather=True`` is a collective; ``gather=False`` keeps this rank's entry only.
    """
    mine = {"rng": rng_state(), **rank_fields}
    ranks = all_gather_object(mine) if gather else [mine]
    if not is_main():
        return None
    return {"task": task.state_dict(), **opt.state_dict(), **fields, "ranks": ranks}


def unpack_training_state(state: dict[str, Any], task: nn.Module, opt: Any, rank: int) -> dict | None:
    """Load :func:`pack_training_state`'s ``state`` into ``task`` and ``opt``, restore this rank's RNG
    streams; returns this rank's entry of ``ranks`` (None if the checkpoint has none for it)."""
    task.load_state_dict(state["task"])
    opt.load_state_dict(state)
    if rank >= len(state["ranks"]):
        return None
    set_rng_state(state["ranks"][rank]["rng"])
    return state["ranks"][rank]


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The generators training draws from: python ``random``, numpy's global one, torch CPU and CUDA."""
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)}
        | {"has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA only when the device count matches)."""
    random.setstate(state["python"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
