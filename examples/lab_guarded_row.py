"""The guarded row against the baseline (and GPR-FT) on the full lab, without the paper's other rows: a
time-boxed part of `mcip lab run` (the same library calls and settings, except Re-A at most 12 epochs),
evaluated on the test split with the lab benchmarks. Needs the lab's base model, pseudo-captions and GPR-FT
row from an earlier `mcip lab run --out OUT` (it reuses them).

    python examples/lab_guarded_row.py OUT
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

from mcip.experiment.lab import FULL, GUARDED, LabRun
from mcip.lab.reading import reading
from mcip.lab.subset import write_lab_data

t0 = time.perf_counter()
s = dataclasses.replace(FULL, realign_epochs=12)
lab = LabRun(
    Path.home() / ".cache/mcip/lab",
    Path(sys.argv[1] if len(sys.argv) > 1 else "lab-results"),
    s,
    progress=False,
)
lab.data = write_lab_data(lab.root, lab.out / "data", s.subset)
base = lab.base_model()
captions = lab.captions(base)
lab.start_rows(base, captions)
steps = {}
t = time.perf_counter()
guarded = lab.model_of("guarded")
steps["guarded row"] = round(time.perf_counter() - t)
models = {"baseline": base, "GPR-FT": lab.out / "runs" / "gpr" / "model", GUARDED: guarded}
t = time.perf_counter()
reports, files, table = lab.evaluate(models)
steps["evaluation"] = round(time.perf_counter() - t)
pairs = [(n, f) for n, f, _ in lab.columns]
text = reading(reports, pairs)
(lab.out / "results" / "reading.md").write_text(text + "\n")
(lab.out / "results" / "guard_run.json").write_text(
    json.dumps({"steps_seconds": steps, "seconds": round(time.perf_counter() - t0)}, indent=2)
)
print(table)
print(text)
print(steps, round(time.perf_counter() - t0))
