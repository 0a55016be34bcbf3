"""EmbeddingDriftLoss against a per-sample float64 loop, closed forms, gradcheck and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from mcip.errors import InputError
from mcip.losses import EmbeddingDriftLoss


def naive(new: torch.Tensor, start: torch.Tensor) -> float:
    total = 0.0
    for a, b in zip(new.double().tolist(), start.double().tolist(), strict=True):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        total += 1.0 - dot / (na * nb)
    return total / len(new)


def test_matches_naive_loop():
    torch.manual_seed(0)
    new, start = torch.randn(7, 12), torch.randn(7, 12) * 3
    assert EmbeddingDriftLoss()(new, start).item() == pytest.approx(naive(new, start), abs=1e-6)


def test_closed_forms():
    x = torch.randn(5, 4)
    loss = EmbeddingDriftLoss()
    assert loss(x, 2.5 * x).item() == pytest.approx(0.0, abs=1e-6)  # same direction
    assert loss(x, -x).item() == pytest.approx(2.0, abs=1e-6)  # opposite
    e = torch.eye(4)
    assert loss(e[:2], e[2:]).item() == pytest.approx(1.0, abs=1e-6)  # orthogonal


def test_gradient_flows_into_new_only():
    new = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    start = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    EmbeddingDriftLoss()(new, start).backward()
    assert new.grad is not None and new.grad.abs().sum() > 0
    assert start.grad is None


def test_gradcheck():
    new = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    start = torch.randn(4, 5, dtype=torch.float64)
    # the loss computes in float32; check the gradient against finite differences loosely
    assert torch.autograd.gradcheck(
        lambda n: EmbeddingDriftLoss()(n, start).double(), (new,), eps=1e-3, atol=1e-3, rtol=1e-2
    )


@pytest.mark.parametrize(
    "new,start,match",
    [
        (torch.randn(3, 4), torch.randn(2, 4), "same batch"),
        (torch.randn(3, 4), torch.randn(3, 5), "dimension"),
        (torch.randn(3), torch.randn(3), "2-D"),
        (torch.full((2, 3), float("nan")), torch.randn(2, 3), "non-finite"),
    ],
)
def test_bad_input(new, start, match):
    with pytest.raises(InputError, match=match):
        EmbeddingDriftLoss()(new, start)
