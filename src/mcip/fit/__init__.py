"""Moved: the experiment runner lives in :mod:`mcip.experiment` and ``mcip fit`` (the user-data source) in
:mod:`mcip.experiment.fit`. This package keeps old imports working: its names below, and the old module
paths (``mcip.fit.runner``, ``mcip.fit.report``, ...), which are the very modules of their new homes
(:data:`MOVED`). New code imports from :mod:`mcip.experiment`."""

import importlib
import sys

from mcip.experiment.fit import FitRun, FitSettings, plan_fit, read_fit_data, run_fit
from mcip.experiment.rows import GUARDED, ROWS, Row, RunSettings, select_rows
from mcip.experiment.runner import Runner, RunResult

MOVED = {  # old module under mcip.fit -> its new home
    "runner": "mcip.experiment.runner",
    "rows": "mcip.experiment.rows",
    "fit": "mcip.experiment.fit.source",
    "captions": "mcip.experiment.fit.captions",
    "data": "mcip.experiment.fit.data",
    "plan": "mcip.experiment.fit.plan",
    "recipe": "mcip.experiment.fit.recipe",
    "report": "mcip.experiment.fit.report",
    "search": "mcip.experiment.fit.search",
    "search_report": "mcip.experiment.fit.search_report",
    "settings": "mcip.experiment.fit.settings",
}
for _old, _new in MOVED.items():
    sys.modules[f"{__name__}.{_old}"] = globals()[_old] = importlib.import_module(_new)

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
