"""``export_onnx``: a model's image and text towers as two ONNX graphs, with its tokenizer and its
preprocessing spelled out beside them (``preprocess.json``, :mod:`mcip.export.preprocess`).

The folder::

    image.onnx        pixels (B, 3, S, S) float32 -> embedding (B, D) float32, L2-normalised rows
    text.onnx         input_ids [, attention_mask] (B, L) int64 -> embedding (B, D) float32, L2-normalised
    preprocess.json   image recipe, tokenizer rules, graph names, source model, parity
    tokenizer/ or bpe_simple_vocab_16e6.txt.gz   the tokenizer's files

B is dynamic in both graphs; L is dynamic where the model pads to the longest text of a batch (composed
and CLIP ``hf:`` models) and fixed where it pads to its context length (open_clip, SigLIP).

The graphs are traced with PyTorch's TorchScript-based exporter (``dynamo=False``: the torch.export-based
one needs ``onnxscript``). Tracing records one path through Python control flow, so every export is
checked before it is kept: the folder is opened as an :class:`~mcip.export.onnx_model.OnnxModel` (its
tokenizer rebuilt from the written files) and a batch of another size than the traced one, with texts of
several lengths, must give the PyTorch model's token ids and embeddings with a least cosine of at least
:data:`MIN_COSINE`, else nothing is written (``UnsupportedError``).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mcip._io import atomic_dir
from mcip.errors import ConfigError, UnsupportedError, require
from mcip.export.onnx_model import OnnxModel
from mcip.export.preprocess import FORMAT, IMAGE_GRAPH, PREPROCESS_FILE, TEXT_GRAPH, image_rules
from mcip.export.tokenizer import describe_tokenizer
from mcip.models.base import EmbeddingModel
from mcip.models.fingerprint import IMAGE_PARTS, TEXT_PARTS, model_fingerprint

DEFAULT_OPSET = 17
MIN_COSINE = 0.9999
"""The least cosine between an exported graph's embedding and PyTorch's that an export must reach."""

TRACE_TEXTS = ("a photo of a dog", "a")  # two lengths: the traced graph pads (a mask path, not none)
CHECK_TEXTS = ("a small green bird with a large face", "two red cars", "an emoji of a smiling face", "tree")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote: the folder, its files, and the least cosine of each graph."""

    folder: Path
    files: list[str]
    image_min_cosine: float
    text_min_cosine: float


class ImageTower(nn.Module):
    """(B, 3, S, S) pixels -> (B, D) unit embeddings: ``model.encode_image`` as one module."""

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.project_image(self.model.image_features(pixels)), dim=-1)


class TextTower(nn.Module):
    """The tokenizer's (B, L) tensors named ``names``, positionally -> (B, D) unit embeddings."""

    def __init__(self, model: EmbeddingModel, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        tokens = dict(zip(self.names, inputs, strict=True))
        return F.normalize(self.model.project_text(self.model.text_features(tokens)), dim=-1)


def check_export_target(out: str | os.PathLike) -> Path:
    """Fail before any work when onnx or onnxruntime is missing (``MissingDependencyError``) or ``out``
    exists and is not an empty folder (``ConfigError``: nothing is overwritten). Returns ``out``."""
    require("onnx", "onnx", "ONNX export")
    require("onnxruntime", "onnx", "ONNX export")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{out} exists and is not an empty folder; choose a new --out (nothing was written)."
        )
    return out


def export_onnx(model: EmbeddingModel, out: str | os.PathLike, opset: int = DEFAULT_OPSET) -> ExportResult:
    """Write ``model``'s two towers, tokenizer and ``preprocess.json`` to the new folder ``out``, atomically
    (see the module docstring). ``model`` must hold float32 weights."""
    out = check_export_target(out)
    if model.dtype != torch.float32:
        raise ConfigError(
            f"Export a model with float32 weights (this one is {model.dtype}); load it with fp32."
        )
    was_training = model.training
    model.eval()
    try:
        with atomic_dir(out) as tmp:
            spec = _write_graphs(model, tmp, opset)
            image_cos, text_cos = _check_parity(model, tmp)
            spec["parity"] = {
                "image_min_cosine": image_cos,
                "text_min_cosine": text_cos,
                "check": f"random pixels (3 images) and {len(CHECK_TEXTS)} captions against PyTorch",
            }
            (tmp / PREPROCESS_FILE).write_text(json.dumps(spec, indent=2) + "\n")
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    finally:
        model.train(was_training)
    return ExportResult(out, files, image_cos, text_cos)


def _write_graphs(model: EmbeddingModel, folder: Path, opset: int) -> dict:
    import onnx

    rules = describe_tokenizer(model, folder)
    names = list(rules["inputs"])
    dynamic_length = rules["padding"] == "longest"
    size = model.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(model.device)
    tokens = model.tokenize(list(TRACE_TEXTS))
    text_axes = {0: "batch", 1: "sequence"} if dynamic_length else {0: "batch"}
    jobs = [
        (ImageTower(model), (pixels,), IMAGE_GRAPH, ["pixels"], {"pixels": {0: "batch"}}),
        (
            TextTower(model, names),
            tuple(tokens[n].to(model.device) for n in names),
            TEXT_GRAPH,
            names,
            dict.fromkeys(names, text_axes),
        ),
    ]
    for tower, args, graph, inputs, axes in jobs:
        _trace(tower, args, folder / graph, inputs, axes, opset)
        onnx.checker.check_model(str(folder / graph))
    spec = {
        "format": FORMAT,
        "embed_dim": int(model.embed_dim),
        "opset": opset,
        "source": {
            "spec": model.spec,
            "backend": model.backend,
            "image_fingerprint": model_fingerprint(model, IMAGE_PARTS),
            "text_fingerprint": model_fingerprint(model, TEXT_PARTS),
        },
        "image": image_rules(model.image_config),
        "text": {
            "graph": TEXT_GRAPH,
            "inputs": names,
            "output": "embedding",
            "dtype": "int64",
            "sequence_length": "dynamic" if dynamic_length else int(tokens[names[0]].shape[1]),
            "tokenizer": rules,
        },
    }
    (folder / PREPROCESS_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def _trace(tower: nn.Module, args: tuple, path: Path, inputs: list[str], axes: dict, opset: int) -> None:
    """One tower to one ONNX file, traced in eval mode without gradients."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's fused inference kernel (open_clip) has no ONNX form: trace the plain path
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the legacy exporter's deprecation notice and the tracer's warnings: the parity check decides
            warnings.simplefilter("ignore")
            torch.onnx.export(
                tower.eval(),
                args,
                str(path),
                dynamo=False,
                input_names=inputs,
                output_names=["embedding"],
                dynamic_axes={**axes, "embedding": {0: "batch"}},
                opset_version=opset,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def least_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest row-wise cosine similarity of two (B, D) arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


@torch.no_grad()
def _check_parity(model: EmbeddingModel, folder: Path) -> tuple[float, float]:
    runtime = OnnxModel(folder)
    size = model.image_size
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    image_cos = least_cosine(runtime.encode_image(pixels), model.encode_image(pixels).float().cpu())
    ours, theirs = runtime.tokenize(list(CHECK_TEXTS)), model.tokenize(list(CHECK_TEXTS))
    for name, ids in ours.items():
        if not torch.equal(ids, theirs[name].cpu().long()):
            raise UnsupportedError(
                f"The tokenizer rebuilt from the export's files gives other {name} than {model.spec}'s own "
                f"for {list(CHECK_TEXTS)}; this model's tokenizer cannot be exported as written."
            )
    text_cos = least_cosine(runtime.encode_text(ours), model.encode_text(theirs).float().cpu())
    for side, cos in (("image", image_cos), ("text", text_cos)):
        if not cos >= MIN_COSINE:
            raise UnsupportedError(
                f"The exported {side} graph of {model.spec} disagrees with PyTorch (least cosine {cos:.6f} < "
                f"{MIN_COSINE}); the trace does not generalise for this model, so nothing was written."
            )
    return image_cos, text_cos
