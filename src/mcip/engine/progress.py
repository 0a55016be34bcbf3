"""What a run reports: metrics.jsonl, the interval averages behind it, the progress bar, skipped items
and the guard against mostly unreadable data, validation without side effects, the summary."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mcip._io import atomic_write_text
from mcip.engine.checkpoint import rng_state, set_rng_state
from mcip.engine.distributed import DistInfo, all_reduce_mean, all_reduce_sum
from mcip.engine.result import TrainResult

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a torn last line from a killed run is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def scalar_logs(out: dict[str, Any]) -> dict[str, torch.Tensor | float]:
    """The scalar entries of a task output (0-d / 1-element tensors, ints and floats)."""
    logs: dict[str, torch.Tensor | float] = {}
    for key, value in out.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            logs[key] = value.detach().float().reshape(())
        elif isinstance(value, int | float) and not isinstance(value, bool):
            logs[key] = float(value)
    return logs


def run_validation(validate: Callable[[nn.Module], dict[str, float]], task: nn.Module) -> dict[str, float]:
    """``validate(task)`` in eval mode without gradients, as floats.

    Train/eval modes and the RNG streams are restored afterwards, so validating never changes what
    training does next.
    """
    modes, saved = [(m, m.training) for m in task.modules()], rng_state()
    try:
        task.eval()
        with torch.no_grad():
            return {key: float(value) for key, value in validate(task).items()}
    finally:
        for module, training in modes:
            module.training = training
        set_rng_state(saved)


class IntervalMeter:
    """Sums of the task's scalar logs and of the items seen since the last log line.

    Values stay on the device until :meth:`means`, so logging costs one synchronisation per interval.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = {}
        self.items = 0
        self.start = time.perf_counter()

    def add(self, out: dict[str, Any], items: int) -> None:
        for key, value in scalar_logs(out).items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.items += items

    def means(self, device: torch.device) -> dict[str, float]:
        """Interval means, averaged over ranks (every rank must log the same keys)."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        values = torch.stack(
            [torch.as_tensor(self.sums[k], dtype=torch.float32, device=device) / self.counts[k] for k in keys]
        )
        return dict(zip(keys, all_reduce_mean(values).tolist(), strict=True))

    def items_per_s(self, world_size: int) -> float:
        """Items per second over all ranks (every rank sees about as many as this one)."""
        seconds = max(time.perf_counter() - self.start, 1e-9)
        return self.items * world_size / seconds


class Reporter:
    """One run's reports: ``metrics.jsonl`` and a tqdm bar (loss, items/s, ETA) on rank 0 only, the
    interval averages behind them, and the summary at the end."""

    def __init__(self, run_dir: Path, info: DistInfo, progress: bool = True) -> None:
        self.run_dir, self.info, self.show = Path(run_dir), info, progress and info.is_main
        self.path = self.run_dir / METRICS_FILE
        self.meter = IntervalMeter()
        self.last_train: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        self.last_log_step = -1
        self.bar = tqdm(total=0, disable=True)

    def start(self, total_steps: int, step: int) -> None:
        self.bar = tqdm(
            total=total_steps, initial=step, disable=not self.show, unit="step", dynamic_ncols=True
        )

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (rank 0)."""
        if self.info.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after ``step`` (a resumed run repeats them) and any torn line."""
        if self.info.is_main and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def train_record(self, step: int, epoch: float, lrs: dict[str, float], skips: SkipCounter) -> None:
        """Log the interval's averages (over ranks), learning rates, throughput and skip counts."""
        means, (skipped, skipped_batches) = self.meter.means(self.info.device), skips.totals(self.info.device)
        speed = self.meter.items_per_s(self.info.world_size)
        record = {"step": step, "epoch": epoch, **means, **{f"lr/{k}": v for k, v in lrs.items()}}
        self.write(record | {"items_per_s": speed, "skipped": skipped, "skipped_batches": skipped_batches})
        self.bar.set_postfix_str(f"loss={means.get('loss', math.nan):.4f} items/s={speed:.1f}", refresh=False)
        self.last_train, self.last_log_step = means, step
        self.meter.reset()

    def val_record(self, step: int, epoch: float, results: dict[str, float]) -> None:
        self.last_val = {f"val/{key}": value for key, value in results.items()}
        self.write({"step": step, "epoch": epoch, **self.last_val})

    def finish(self, result: TrainResult) -> TrainResult:
        """Write summary.json and print the summary (rank 0)."""
        self.bar.close()
        if self.info.is_main:
            result.write()
            if self.show:
                print(result.summary())
        return result


def batch_rows(batch: Any) -> int:
    """Items in a batch: the leading size of its first tensor (0 for None or a batch without rows)."""
    if not isinstance(batch, dict):
        return 0
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and key != "skipped":
            return int(value.shape[0])
        if isinstance(value, dict) and (rows := batch_rows(value)):
            return rows
    return 0


def _describe(index: Any, error: Any) -> tuple[Any, str]:
    index = index if isinstance(index, int | str) else str(index)
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return index, text


class SkipCounter:
    """Unreadable items of one rank, and the guard that stops a run whose data is mostly unreadable.

    A batch may carry ``"skipped": [(index, error), ...]``; a ``None`` batch (or one with no rows) had
    nothing readable. Such a batch counts as ``nominal`` items for the guard, the largest batch size
    seen so far (rows + skipped), since its size is unknown.
    """

    MIN_ITEMS = 200
    KEEP_FAILURES = 20

    def __init__(self, max_fraction: float) -> None:
        self.max_fraction = max_fraction
        self.seen = self.skipped = self.skipped_batches = 0
        self.nominal = 1
        self.failures: list[tuple[Any, str]] = []

    def add(self, batch: dict | None) -> int:
        """Count one batch; returns its readable items (:func:`batch_rows`)."""
        rows = batch_rows(batch)
        skipped = list(batch.get("skipped") or ()) if isinstance(batch, dict) else []
        room = self.KEEP_FAILURES - len(self.failures)
        self.failures += [_describe(*pair) for pair in skipped[: max(room, 0)]]
        self.skipped += len(skipped)
        self.seen += rows + len(skipped)
        self.nominal = max(self.nominal, rows + len(skipped))
        if rows == 0 and not skipped:
            self.skipped_batches += 1
        return rows

    def fraction(self) -> tuple[int, int]:
        """``(unreadable, seen)`` items for the guard, empty batches counted as ``nominal`` items."""
        unknown = self.skipped_batches * self.nominal
        return self.skipped + unknown, self.seen + unknown

    def totals(self, device: torch.device) -> tuple[int, int]:
        """``(skipped items, skipped batches)`` summed over ranks."""
        counts = all_reduce_sum(torch.tensor([self.skipped, self.skipped_batches], device=device))
        return int(counts[0]), int(counts[1])

    def tripped(self) -> bool:
        bad, seen = self.fraction()
        return seen >= self.MIN_ITEMS and bad > self.max_fraction * seen

    def message(self) -> str:
        bad, seen = self.fraction()
        first = "; ".join(f"{i}: {e}" for i, e in self.failures[:5]) or "(whole batches were empty)"
        return (
            f"{bad} of the {seen} items read so far could not be read (more than "
            f"{self.max_fraction:.0%}), so training stopped. First failures: {first}. Check the image "
            "paths and the data root in the manifest, or raise max_skipped_fraction if this is expected."
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "skipped": self.skipped,
            "skipped_batches": self.skipped_batches,
            "nominal": self.nominal,
            "failures": [list(f) for f in self.failures],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.skipped = state["seen"], state["skipped"]
        self.skipped_batches, self.nominal = state["skipped_batches"], state["nominal"]
        self.failures = [tuple(f) for f in state["failures"]]
