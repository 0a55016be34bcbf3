"""The offline lab's data: emoji from npm (``mcip lab prepare``), the per-run subset, the paper's reading and the
photo catalogue. The end-to-end run (``mcip lab run``) is the experiment's lab source, :mod:`mcip.experiment.lab`."""

from mcip.data.lab_manifest import LabDataError, read_lab_manifest
from mcip.lab.fetch import DEFAULT_VERSIONS
from mcip.lab.prepare import LabData, lab_records, prepare_lab

__all__ = ["DEFAULT_VERSIONS", "LabData", "LabDataError", "lab_records", "prepare_lab", "read_lab_manifest"]
