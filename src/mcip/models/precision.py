"""The precision names, defined once: a loaded model's weights and the training loop's autocast.

- :data:`WeightPrecision` / :data:`WEIGHT_PRECISIONS`: the dtype of a model's weights
  (``load_model(precision=...)``; ``fp32`` the default, ``bf16`` / ``fp16`` for inference), mapped to
  torch dtypes by :data:`WEIGHT_DTYPES`.
- :data:`AmpPrecision` / :data:`AMP_PRECISIONS`: the training loop's autocast (``LoopConfig.precision``):
  ``auto`` (bf16 on a CUDA device that supports it, else plain fp32) or one of the weight precisions;
  the weights themselves stay fp32 (``mcip.engine.optim.resolve_precision``).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

WeightPrecision = Literal["fp32", "bf16", "fp16"]
WEIGHT_PRECISIONS: tuple[str, ...] = get_args(WeightPrecision)
WEIGHT_DTYPES: dict[str, torch.dtype] = dict(
    zip(WEIGHT_PRECISIONS, (torch.float32, torch.bfloat16, torch.float16), strict=True)
)

AmpPrecision = Literal["auto", WeightPrecision]
AMP_PRECISIONS: tuple[str, ...] = get_args(AmpPrecision)


def precision_of(dtype: torch.dtype, default: str = "fp32") -> str:
    """The weight precision name of ``dtype`` (``torch.bfloat16`` -> ``"bf16"``), else ``default``."""
    return next((name for name, d in WEIGHT_DTYPES.items() if d == dtype), default)
