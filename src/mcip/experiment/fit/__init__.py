"""``mcip fit``: the experiment's user-data source (:class:`FitRun`, a :class:`mcip.experiment.Runner` on a
user's manifests), with its settings, inputs, recipe search, caption sets, report and dry run."""

from mcip.experiment.fit.data import FitData, read_fit_data
from mcip.experiment.fit.plan import FitPlan, plan_fit
from mcip.experiment.fit.settings import FitSettings
from mcip.experiment.fit.source import FitRun, run_fit

__all__ = ["FitData", "FitPlan", "FitRun", "FitSettings", "plan_fit", "read_fit_data", "run_fit"]
