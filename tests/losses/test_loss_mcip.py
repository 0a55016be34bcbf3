"""MCIPLoss: the weighted sum of its two parts, logging parts, parameters and bad arguments."""

from __future__ import annotations

import pytest
import torch

from mcip.errors import ConfigError, InputError
from mcip.losses import ArcMarginLoss, MCArcMarginLoss, MCIPLoss


def make_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 3, 1])
    captions = torch.randn(9, 8, generator=gen, dtype=torch.float64)
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 3, 5, 5])
    return images, labels, captions, owner


@pytest.mark.parametrize(("arc_weight", "mc_weight"), [(0.75, 0.25), (1.0, 0.0), (0.0, 2.0)])
def test_weighted_sum_of_the_parts(arc_weight, mc_weight):
    images, labels, captions, owner = make_inputs()
    loss = MCIPLoss(4, 8, arc_weight=arc_weight, mc_weight=mc_weight, scale=20.0, margin=0.2).double()
    arc = ArcMarginLoss(4, 8, scale=20.0, margin=0.2).double()
    arc.load_state_dict({"weight": loss.arc.weight.detach()})
    mc = MCArcMarginLoss(scale=20.0, margin=0.2)
    parts = loss.forward_parts(images, labels, captions, owner)
    assert set(parts) == {"loss", "arc", "mc"}
    assert parts["arc"].item() == pytest.approx(arc(images, labels).item(), rel=1e-12)
    assert parts["mc"].item() == pytest.approx(mc(images, captions, owner).item(), rel=1e-12)
    expected = arc_weight * parts["arc"] + mc_weight * parts["mc"]
    assert loss(images, labels, captions, owner).item() == pytest.approx(expected.item(), rel=1e-12)


def test_defaults_follow_the_paper():
    loss = MCIPLoss(num_classes=10, embed_dim=16)
    assert (loss.arc_weight, loss.mc_weight) == (0.75, 0.25)
    assert (loss.arc.scale, loss.arc.margin, loss.mc.scale, loss.mc.margin) == (30.0, 0.1, 30.0, 0.1)
    assert loss.mc.hard_caption_weight == 0.1


def test_only_parameters_are_the_class_centres_and_gradients_reach_them():
    images, labels, captions, owner = make_inputs()
    loss = MCIPLoss(4, 8, sub_centers=2).double()
    assert [name for name, _ in loss.named_parameters()] == ["arc.weight"]
    images.requires_grad_()
    loss(images, labels, captions, owner).backward()
    assert torch.isfinite(loss.arc.weight.grad).all() and loss.arc.weight.grad.abs().sum() > 0
    assert torch.isfinite(images.grad).all()


def test_gradcheck():
    images, labels, captions, owner = make_inputs()
    loss = MCIPLoss(4, 8, scale=4.0, margin=0.3).double()
    images, captions = images.requires_grad_(), captions.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: loss(x, labels, t, owner), (images, captions))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"arc_weight": -1.0}, "arc_weight must be a finite number >= 0"),
        ({"mc_weight": float("nan")}, "mc_weight must be a finite number >= 0"),
        ({"arc_weight": 0.0, "mc_weight": 0.0}, "both 0.*set one > 0"),
        ({"margin": 5.0}, r"radians.*math\.radians\(5\.0\)"),
        ({"num_classes": 0}, "num_classes must be an integer >= 1"),
    ],
)
def test_invalid_arguments(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        MCIPLoss(**{"num_classes": 4, "embed_dim": 8, **kwargs})


def test_bad_labels_reported_by_the_arc_part():
    images, labels, captions, owner = make_inputs()
    with pytest.raises(InputError, match=r"labels must lie in 0\.\.3"):
        MCIPLoss(4, 8).double()(images, labels + 1, captions, owner)
