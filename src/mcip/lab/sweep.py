"""Moved to :mod:`mcip.experiment.sweep` (it trains the lab source's MCIP stage); this module keeps
``from mcip.lab.sweep import ...`` working. New code imports from :mod:`mcip.experiment.sweep`."""

from mcip.experiment.sweep import SETTINGS, format_sweep, sweep_mcip, variant_name

__all__ = ["SETTINGS", "format_sweep", "sweep_mcip", "variant_name"]
