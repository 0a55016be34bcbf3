"""The experiment both ``mcip lab run`` and ``mcip fit`` run: one :class:`Runner` (data, base model,
captions, the rows, evaluation on val that chooses, test read once, report, index) with two data sources,
the offline lab (:mod:`mcip.experiment.lab`) and a user's manifests (:mod:`mcip.experiment.fit`).

Layout: ``runner.py`` (the steps and what a source provides), ``rows.py`` (the run's settings and the rows
as a table, each row with the function that makes its model), ``training.py`` (a row's stages, the rows'
models, WiSE-FT), ``evaluation.py`` (val chooses, test is read once), ``search_demo.py`` (the test images
indexed, a few example queries); ``lab.py`` and ``sweep.py`` (the lab's source and its loss sweeps) and
``fit/`` (the user's source). The lab's data (``mcip lab prepare``) stays in :mod:`mcip.lab`.
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
