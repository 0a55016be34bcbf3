"""``preprocess.json``: everything a user needs to feed the exported graphs without PyTorch or mcip.

Written by :func:`mcip.export.export_onnx`, read by :class:`mcip.export.OnnxModel`::

    format          "mcip-onnx/1"
    embed_dim       D, the width of both graphs' (B, D) output "embedding" (L2-normalised rows)
    source          {"spec", "backend", "image_fingerprint", "text_fingerprint"} of the exported model
    image           {"graph": "image.onnx", "input": "pixels", "output": "embedding", "shape": ["batch",
                    3, S, S], "dtype": "float32", "layout": "NCHW", "channel_order": "RGB", "alpha":
                    "composite onto white", "resize": {"shorter_side": R, "longer_side": "int(R * longer /
                    shorter)", "interpolation", "library": "PIL"}, "center_crop": {"size": S, "offset":
                    "round((side - S) / 2)"}, "scale": 1/255, "mean", "std"}
    text            {"graph": "text.onnx", "inputs": [...], "output": "embedding", "sequence_length":
                    "dynamic" or L, "dtype": "int64", "tokenizer": rules (mcip.export.tokenizer)}
    parity          least cosine of each graph against PyTorch on the export's own check batch
    opset           the ONNX opset

The image recipe is ``mcip.models.transforms.eval_transform`` written out: torchvision's ``Resize(R)`` on a
PIL image is PIL's ``resize`` to (shorter side R, longer side truncated), its ``CenterCrop(S)`` takes the
window at ``round((side - S) / 2)``, ``ToTensor`` divides by 255 into RGB channels-first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcip.errors import ConfigError
from mcip.models.transforms import ImageConfig

FORMAT = "mcip-onnx/1"
PREPROCESS_FILE = "preprocess.json"
IMAGE_GRAPH = "image.onnx"
TEXT_GRAPH = "text.onnx"


def image_rules(cfg: ImageConfig) -> dict[str, Any]:
    """The ``image`` section for a model's :class:`ImageConfig`."""
    resized = round(cfg.resize_ratio * cfg.size)
    return {
        "graph": IMAGE_GRAPH,
        "input": "pixels",
        "output": "embedding",
        "shape": ["batch", 3, cfg.size, cfg.size],
        "dtype": "float32",
        "layout": "NCHW",
        "channel_order": "RGB",
        "alpha": "composite onto white",
        "resize": {
            "shorter_side": resized,
            "longer_side": "int(shorter_side * longer / shorter)",
            "interpolation": cfg.interpolation,
            "library": "PIL",
        },
        "center_crop": {"size": cfg.size, "offset": "round((side - size) / 2)"},
        "scale": 1 / 255,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "resize_ratio": cfg.resize_ratio,
    }


def image_config_of(rules: dict[str, Any]) -> ImageConfig:
    """The :class:`ImageConfig` whose eval transform the ``image`` section spells out."""
    return ImageConfig(
        size=int(rules["center_crop"]["size"]),
        mean=tuple(rules["mean"]),
        std=tuple(rules["std"]),
        interpolation=rules["resize"]["interpolation"],
        resize_ratio=float(rules["resize_ratio"]),
    )


def read_preprocess(folder: Path) -> dict[str, Any]:
    """The ``preprocess.json`` of an export folder, checked to be one (``ConfigError`` with the fix)."""
    path = Path(folder) / PREPROCESS_FILE
    if not path.is_file():
        raise ConfigError(
            f"{folder} is not an ONNX export (no {PREPROCESS_FILE}); write one with "
            f"`mcip export --onnx MODEL --out {folder}`."
        )
    try:
        spec = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); export the model again.") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        found = spec.get("format") if isinstance(spec, dict) else None
        raise ConfigError(
            f"{path} has format {found!r}, this mcip reads {FORMAT!r}; export the model again with this mcip."
        )
    for graph in (spec["image"]["graph"], spec["text"]["graph"]):
        if not (Path(folder) / graph).is_file():
            raise ConfigError(f"{folder} lacks {graph}; export the model again.")
    return spec
