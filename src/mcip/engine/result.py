"""What a training run did (:class:`TrainResult`), written as ``run_dir/summary.json``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mcip._io import atomic_write_json

SUMMARY_FILE = "summary.json"


@dataclass
class TrainResult:
    """What :func:`mcip.engine.loop.train` did.

    Attributes:
        steps: optimizer steps taken in total (over resumes).
        epochs_done: fully finished epochs.
        seconds: training wall time over resumes.
        best_metric, best_step: the best validation value of ``val_metric`` (higher is better) and when.
        val_metric: the name of the validation metric that selects the best checkpoint.
        final_metrics: the last logged training averages and the last validation results (``val/...``).
        skipped: items (images) skipped because they could not be read, over all ranks.
        skipped_batches: batches skipped whole (every item unreadable).
        first_failures: up to 20 ``(index, error)`` pairs of the first unreadable items.
        stopped_early: True when early stopping ended the run.
    """

    steps: int
    epochs_done: int
    seconds: float
    best_metric: float | None
    best_step: int | None
    final_metrics: dict[str, float]
    skipped: int
    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    skipped_batches: int = 0
    first_failures: list[tuple[Any, str]] = field(default_factory=list)
    stopped_early: bool = False
    val_metric: str | None = None

    def summary(self) -> str:
        """A few human-readable lines: steps, time, images skipped, best validation score."""
        minutes, secs = divmod(self.seconds, 60)
        lines = [
            f"Trained {self.steps} steps ({self.epochs_done} full epochs) in {int(minutes)}m {secs:.0f}s"
            + (", stopped early" if self.stopped_early else ""),
            f"Skipped {self.skipped} unreadable items and {self.skipped_batches} empty batches",
        ]
        if self.first_failures:
            lines.append("First failures: " + "; ".join(f"{i}: {e}" for i, e in self.first_failures[:3]))
        if self.best_metric is not None:
            lines.append(
                f"Best validation {self.val_metric or ''} {self.best_metric:.4f} at step {self.best_step}"
            )
        lines.append(f"Run folder: {self.run_dir} (last checkpoint {self.last_checkpoint})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("run_dir", "best_checkpoint", "last_checkpoint"):
            data[key] = None if data[key] is None else str(data[key])
        data["first_failures"] = [[str(i), e] for i, e in self.first_failures]
        data["final_metrics"] = {k: v if math.isfinite(v) else None for k, v in self.final_metrics.items()}
        return data

    def write(self) -> Path:
        """Write ``run_dir/summary.json``."""
        path = Path(self.run_dir) / SUMMARY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, self.to_json(), indent=2)
