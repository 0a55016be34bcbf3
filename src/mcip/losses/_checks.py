"""Input and argument validation shared by the losses.

Every check raises :class:`~mcip.errors.InputError` (bad tensors passed to ``forward``) or
:class:`~mcip.errors.ConfigError` (bad constructor arguments) with a message that names the input,
says what was wrong and how to fix it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mcip.errors import ConfigError, InputError
from mcip.losses._precision import compute_dtype


def check_positive(value: float, name: str) -> None:
    """Fail unless ``value`` is a finite number > 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}.")


def check_non_negative(value: float, name: str) -> None:
    """Fail unless ``value`` is a finite number >= 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}.")


def check_count(value: int, name: str) -> None:
    """Fail unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")


def check_margin(margin: float) -> None:
    """Fail unless the angular margin lies in [0, pi/2) radians."""
    if isinstance(margin, int | float) and 0 <= margin < math.pi / 2:
        return
    hint = ""
    if isinstance(margin, int | float) and margin >= math.pi / 2:
        hint = f" If you meant {margin} degrees, pass math.radians({margin}) = {math.radians(margin):.4g}."
    raise ConfigError(f"margin must be an angle in radians in [0, pi/2), got {margin!r}.{hint}")


def check_finite(x: Tensor, name: str) -> None:
    """Fail if ``x`` holds NaN or Inf values."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(
            f"{name} has {bad} non-finite (NaN or Inf) values. Check the model output for overflow "
            "(e.g. lower the learning rate or use bf16 instead of fp16) and the input data for "
            "corrupt samples."
        )


def check_embeddings(x: object, name: str, dim: int | None = None, allow_empty: bool = False) -> None:
    """Check a ``(B, D)`` floating-point, finite embedding matrix; ``dim`` is the expected D."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (B, D), got {type(x).__name__}.")
    if x.ndim != 2:
        raise InputError(
            f"{name} must be a 2-D tensor of shape (B, D), got shape {tuple(x.shape)}. "
            "Flatten extra dimensions or add the batch dimension with x.unsqueeze(0)."
        )
    if x.shape[0] == 0 and not allow_empty:
        raise InputError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one row.")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; call .float().")
    if dim is not None and x.shape[1] != dim:
        raise InputError(
            f"{name} has embedding dimension {x.shape[1]} but the loss was built with embed_dim={dim}. "
            f"Build the loss with embed_dim={x.shape[1]} or check which embedding you pass."
        )
    check_finite(x, name)


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Fail unless two ``(B, D)`` matrices have the same shape (paired rows)."""
    if a.shape != b.shape:
        raise InputError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; row i of each "
            "must be the same pair, so both need the same (B, D) shape."
        )


def check_same_width(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Fail unless a (B, D) and an (N, D) matrix share D (they live in the same embedding space)."""
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"{name_a} has embedding dimension {a.shape[1]} but {name_b} has {b.shape[1]}; both must come "
            "from the same joint embedding space (check that the text embeddings are projected)."
        )


def check_index(index: object, name: str, length: int, upper: int, what: str) -> None:
    """Check a 1-D integer tensor of ``length`` values in ``[0, upper)``; ``what`` names the range."""
    if not isinstance(index, Tensor):
        raise InputError(f"{name} must be a 1-D torch.Tensor of integers, got {type(index).__name__}.")
    if index.ndim != 1 or index.shape[0] != length:
        raise InputError(f"{name} must have shape ({length},), one value per row, got {tuple(index.shape)}.")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise InputError(f"{name} must hold integers, got dtype {index.dtype}; convert with .long().")
    if length == 0:
        return
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= upper:
        raise InputError(
            f"{name} must lie in 0..{upper - 1} ({what}), got values from {low} to {high}. "
            "Remap them to a contiguous index first, e.g. with a class-name -> index mapping."
        )


def as_scalar(value: Tensor | float, name: str, like: Tensor) -> Tensor:
    """Return ``value`` as a 0-d tensor on ``like``'s device; accepts shapes () and (1,)."""
    if isinstance(value, Tensor):
        t = value.to(like.device)
    elif isinstance(value, int | float):
        t = torch.tensor(float(value), dtype=compute_dtype(like), device=like.device)
    else:
        raise InputError(f"{name} must be a scalar tensor or a number, got {type(value).__name__}.")
    if t.numel() != 1:
        raise InputError(f"{name} must be a scalar (a 0-d or 1-element tensor), got shape {tuple(t.shape)}.")
    check_finite(t, name)
    return t.reshape(())
