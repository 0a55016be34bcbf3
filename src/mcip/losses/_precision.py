"""Numerical precision of the losses: they run in at least float32, also inside an AMP region.

Under ``torch.autocast`` a matmul would produce bf16/fp16 cosines, whose resolution near 1 (about
0.004 for bf16) is too coarse for an angular margin of 0.1 rad and for logits scaled by 30-100.
The losses therefore upcast half-precision inputs and switch autocast off for their own arithmetic;
gradients flow back to the inputs in the inputs' dtype.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype the loss arithmetic runs in: at least float32 (fp16/bf16 inputs are upcast)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def autocast_off(like: Tensor) -> contextlib.AbstractContextManager:
    """A context that disables autocast on ``like``'s device type (a no-op where autocast does not exist)."""
    try:
        return torch.autocast(device_type=like.device.type, enabled=False)
    except RuntimeError:  # this device type has no autocast, so there is nothing to switch off
        return contextlib.nullcontext()
