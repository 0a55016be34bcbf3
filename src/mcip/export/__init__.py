"""Deploying the one embedding without PyTorch: ONNX export of the two towers and an onnxruntime model.

- :func:`export_onnx` (``mcip export --onnx``): ``image.onnx``, ``text.onnx``, the tokenizer's files and
  ``preprocess.json`` (:mod:`mcip.export.preprocess`) in one folder.
- :class:`OnnxModel` / :func:`load_onnx_model` (``mcip encode --runtime onnx``, ``mcip serve --runtime
  onnx``): such a folder run by onnxruntime behind the encoding half of the ``EmbeddingModel`` protocol.
"""

from __future__ import annotations

from mcip.export.onnx_export import MIN_COSINE, ExportResult, check_export_target, export_onnx, least_cosine
from mcip.export.onnx_model import RUNTIMES, OnnxModel, check_runtime, load_onnx_model

__all__ = [
    "MIN_COSINE",
    "RUNTIMES",
    "ExportResult",
    "OnnxModel",
    "check_export_target",
    "check_runtime",
    "export_onnx",
    "least_cosine",
    "load_onnx_model",
]
