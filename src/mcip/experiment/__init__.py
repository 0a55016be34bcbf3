"""The experiment both ``mcip lab run`` and ``mcip fit`` run: one :class:`Runner` (data, base model,
captions, the rows, evaluation on val that chooses, test read once, report, index) with two data sources,
the offline lab (:mod:`mcip.experiment.lab`) and a user's manifests (:mod:`mcip.experiment.fit`).

Layout: ``runner.py`` (the steps, the rows' training, evaluation and the search demo), ``rows.py`` (the
run's settings and the rows), ``lab.py`` and ``sweep.py`` (the lab's source and its loss sweeps), ``fit/``
(the user's source).
"""

from mcip.experiment.fit import FitRun, FitSettings, plan_fit, read_fit_data, run_fit
from mcip.experiment.lab import LabRun, LabSettings, run_lab
from mcip.experiment.rows import GUARDED, ROWS, Row, RunSettings, select_rows
from mcip.experiment.runner import Runner, RunResult

__all__ = [
    "GUARDED",
    "ROWS",
    "FitRun",
    "FitSettings",
    "LabRun",
    "LabSettings",
    "Row",
    "RunResult",
    "RunSettings",
    "Runner",
    "plan_fit",
    "read_fit_data",
    "run_fit",
    "run_lab",
    "select_rows",
]
