"""Moved to :mod:`mcip.experiment.lab` (the lab is one of the experiment's two data sources); this module
keeps ``from mcip.lab.run import ...`` working. New code imports from :mod:`mcip.experiment.lab`."""

from mcip.experiment.lab import (
    DEMO_K,
    DEMO_TEXT_QUERIES,
    FULL,
    GUARDED,
    QUICK,
    ROWS,
    LabResult,
    LabRun,
    LabSettings,
    Row,
    averages_of,
    lab_rows,
    run_lab,
)

__all__ = [
    "DEMO_K",
    "DEMO_TEXT_QUERIES",
    "FULL",
    "GUARDED",
    "QUICK",
    "ROWS",
    "LabResult",
    "LabRun",
    "LabSettings",
    "Row",
    "averages_of",
    "lab_rows",
    "run_lab",
]
