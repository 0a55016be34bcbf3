"""The offline lab: emoji data from npm (``mcip lab prepare``), the composed base model, the end-to-end run."""

from mcip.data.lab_manifest import LabDataError, read_lab_manifest
from mcip.lab.fetch import DEFAULT_VERSIONS
from mcip.lab.prepare import LabData, lab_records, prepare_lab

__all__ = ["DEFAULT_VERSIONS", "LabData", "LabDataError", "lab_records", "prepare_lab", "read_lab_manifest"]
