"""The MCIP stage's loss settings swept on the lab's val split (README: Keep the text side: the lab's
result): h (the hard-caption weight), the multi-caption weight and the drift regulariser, each variant
trained from the lab's base model and pseudo-captions and selected on val I2I as the lab's MCIP row is.
Reuses the base model and captions of an earlier `mcip lab run --out OUT`.

    python examples/lab_sweep.py OUT

Writes OUT/results/sweep.md and OUT/results/sweep.json.
"""

import json
import sys
import time
from pathlib import Path

from mcip.experiment.lab import FULL, LabRun
from mcip.experiment.sweep import format_sweep, sweep_mcip

VARIANTS = [
    {"h": 0.1, "mc": 0.25, "distill": 0.0},  # the authors' loss: the lab's MCIP row (reused)
    {"h": 0.0, "mc": 0.25, "distill": 0.0},
    {"h": 0.1, "mc": 0.5, "distill": 0.0},
    {"h": 0.0, "mc": 0.5, "distill": 0.0},
    {"h": 0.1, "mc": 0.25, "distill": 1.0},
]

start = time.perf_counter()
out = Path(sys.argv[1] if len(sys.argv) > 1 else "lab-results")
lab = LabRun(Path.home() / ".cache/mcip/lab", out, FULL, progress=False)
rows = sweep_mcip(lab, VARIANTS)
table = format_sweep(rows)
(out / "results").mkdir(parents=True, exist_ok=True)
(out / "results" / "sweep.md").write_text(table + "\n")
(out / "results" / "sweep.json").write_text(json.dumps(rows, indent=2))
print(table)
print(f"{time.perf_counter() - start:.0f} s")
