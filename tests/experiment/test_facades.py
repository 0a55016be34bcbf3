"""Users' old imports keep working after the move to ``mcip.experiment``: ``mcip.fit`` (its names and its
old modules, which are the new modules themselves), ``mcip.lab.run``, ``mcip.lab.sweep`` and
``mcip.run_lab``."""

from __future__ import annotations

import importlib

import pytest

import mcip
import mcip.experiment as experiment
import mcip.fit

NEW_HOME = {
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


@pytest.mark.parametrize("old, new", sorted(NEW_HOME.items()))
def test_an_old_fit_module_is_its_new_home(old, new):
    module = importlib.import_module(f"mcip.fit.{old}")
    assert module is importlib.import_module(new) and getattr(mcip.fit, old) is module


def test_the_old_names_are_the_new_objects():
    for name in mcip.fit.__all__:
        assert getattr(mcip.fit, name) is getattr(experiment, name), name
    from mcip.fit.fit import FitRun
    from mcip.fit.runner import GUARDED, Runner, averages_of, stage_config

    from mcip.lab.run import FULL, QUICK, LabRun, LabSettings, lab_rows, run_lab
    from mcip.lab.sweep import format_sweep, sweep_mcip

    assert (FitRun, Runner, GUARDED) == (experiment.FitRun, experiment.Runner, experiment.GUARDED)
    assert averages_of.__module__ == "mcip.experiment.evaluation"
    assert stage_config.__module__ == "mcip.experiment.training"
    assert (LabRun, LabSettings, run_lab) == (experiment.LabRun, experiment.LabSettings, experiment.run_lab)
    assert FULL.subset == 1 and QUICK.subset < 1 and lab_rows(FULL)[0].name == "baseline"
    assert (sweep_mcip.__module__, format_sweep.__module__) == ("mcip.experiment.sweep",) * 2
    assert mcip.run_lab is experiment.run_lab
