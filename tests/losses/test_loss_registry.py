"""Contract tests over every registered loss, and the create_loss / list_losses errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcip.errors import ConfigError
from mcip.losses import LOSSES, create_loss, list_losses

B, D, C = 6, 8, 4


def _paired():
    images = F.normalize(torch.randn(B, D), dim=1).requires_grad_()
    texts = F.normalize(torch.randn(B, D), dim=1).requires_grad_()
    return images, texts


def _captions():
    return torch.randn(9, D).requires_grad_(), torch.tensor([0, 0, 1, 2, 2, 2, 3, 5, 5])


# name -> (constructor kwargs, inputs factory). A new loss must be added here to pass the contract test.
CASES = {
    "infonce": ({}, lambda: (*_paired(), torch.tensor(2.6, requires_grad=True))),
    "siglip": ({}, lambda: (*_paired(), torch.tensor(2.3, requires_grad=True), torch.tensor(-10.0))),
    "arcmargin": ({"num_classes": C, "embed_dim": D}, lambda: (torch.randn(B, D), torch.arange(B) % C)),
    "mcarcmargin": ({}, lambda: (torch.randn(B, D), *_captions())),
    "mcip": (
        {"num_classes": C, "embed_dim": D},
        lambda: (torch.randn(B, D).requires_grad_(), torch.arange(B) % C, *_captions()),
    ),
}


def test_registry_names():
    assert list_losses() == ["arcmargin", "infonce", "mcarcmargin", "mcip", "siglip"]
    assert set(CASES) == set(LOSSES.names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_loss_builds_runs_and_backpropagates(name):
    torch.manual_seed(0)
    kwargs, make = CASES[name]
    loss = create_loss(name, **kwargs)
    assert isinstance(loss, torch.nn.Module)
    inputs = make()
    for x in inputs:
        if x.is_floating_point():
            x.requires_grad_()
    value = loss(*inputs)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    for x in [*inputs, *loss.parameters()]:
        if x.is_floating_point():
            assert x.grad is not None and torch.isfinite(x.grad).all()
    assert repr(loss)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ConfigError, match=r"Unknown loss 'arcface'\. Valid names: arcmargin, infonce"):
        create_loss("arcface")


def test_unknown_or_missing_arguments_show_the_signature():
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) \['num_class'\].*num_classes, embed_dim"):
        create_loss("arcmargin", num_class=3, embed_dim=4)
    with pytest.raises(ConfigError, match=r"missing argument\(s\) \['embed_dim'\]"):
        create_loss("mcip", num_classes=3)


@pytest.mark.parametrize("name", sorted(CASES))
def test_autocast_does_not_lower_the_precision(name):
    """Inside a bf16 autocast region the loss still computes its cosines and logits in float32."""
    torch.manual_seed(0)
    kwargs, make = CASES[name]
    loss, inputs = create_loss(name, **kwargs), make()
    expected = loss(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(*inputs)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)
