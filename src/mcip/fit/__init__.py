"""The experiment runner: one set of steps (data, base model, captions, rows, evaluation, report, index)
with two data sources, the offline lab (:mod:`mcip.lab.run`) and a user's manifests (``mcip fit``)."""

from mcip.fit.fit import FitRun, FitSettings, plan_fit, read_fit_data, run_fit
from mcip.fit.runner import GUARDED, ROWS, Row, Runner, RunResult, RunSettings, select_rows

__all__ = [
    "GUARDED",
    "ROWS",
    "FitRun",
    "FitSettings",
    "Row",
    "RunResult",
    "RunSettings",
    "Runner",
    "plan_fit",
    "read_fit_data",
    "run_fit",
    "select_rows",
]
