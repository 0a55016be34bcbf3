"""MCArcMarginLoss against a per-image loop, the one-caption reduction to ArcMargin, and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from mcip.errors import ConfigError, InputError
from mcip.losses import ArcMarginLoss, MCArcMarginLoss


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _unit(a: list[float]) -> list[float]:
    norm = math.sqrt(_dot(a, a))
    return [x / norm for x in a]


def _phi(cos: float, m: float) -> float:
    if cos > math.cos(math.pi - m):
        return math.cos(math.acos(max(-1.0, min(1.0, cos))) + m)
    return cos - m * math.sin(math.pi - m)


def naive_mcarcmargin(images, captions, owner, scale, margin, hard) -> float:
    """Per-image, per-caption loop, written from SPEC section 3."""
    xs, ts, owners = (
        [_unit(r) for r in images.tolist()],
        [_unit(r) for r in captions.tolist()],
        owner.tolist(),
    )
    per_image = []
    for i, x in enumerate(xs):
        n_i = owners.count(i)
        if n_i == 0:
            continue
        z = [
            scale * (_phi(_dot(x, t), margin) if o == i else _dot(x, t))
            for t, o in zip(ts, owners, strict=True)
        ]
        top = max(z)
        log_sum_exp = top + math.log(sum(math.exp(v - top) for v in z))
        log_p = [v - log_sum_exp for v in z]
        q = [1.0 / n_i if o == i else 0.0 for o in owners]
        soft = -sum(qk * lp for qk, lp in zip(q, log_p, strict=True))
        hardest = max(-(1 - qk) * lp for qk, lp in zip(q, log_p, strict=True))
        per_image.append(soft + hard * hardest)
    return sum(per_image) / len(per_image)


def make_inputs(batch=5, dim=8, owner=(0, 0, 0, 1, 3, 3, 4, 4, 4, 4), dtype=torch.float64, seed=0):
    """Image 2 has no caption; the others have 3, 1, 2 and 4."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, dim, generator=gen, dtype=dtype)
    captions = torch.randn(len(owner), dim, generator=gen, dtype=dtype)
    return images, captions, torch.tensor(owner)


@pytest.mark.parametrize(("scale", "margin", "hard"), [(30.0, 0.1, 0.1), (10.0, 0.4, 0.0), (16.0, 0.2, 1.0)])
def test_matches_naive_loop_float64(scale, margin, hard):
    images, captions, owner = make_inputs()
    loss = MCArcMarginLoss(scale=scale, margin=margin, hard_caption_weight=hard)
    expected = naive_mcarcmargin(images, captions, owner, scale, margin, hard)
    assert loss(images, captions, owner).item() == pytest.approx(expected, rel=1e-12)


def test_fallback_branch_matches_naive_loop():
    images, captions, owner = make_inputs()
    captions = -images[owner] + 0.01 * captions  # every own caption points away from its image
    loss = MCArcMarginLoss(margin=0.5)
    assert loss.logits(images, captions, owner).shape == (5, 10)
    expected = naive_mcarcmargin(images, captions, owner, 30.0, 0.5, 0.1)
    assert loss(images, captions, owner).item() == pytest.approx(expected, rel=1e-12)


def test_float32_close_to_float64_reference():
    images, captions, owner = make_inputs()
    expected = naive_mcarcmargin(images, captions, owner, 30.0, 0.1, 0.1)
    value = MCArcMarginLoss()(images.float(), captions.float(), owner)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_bfloat16_is_finite_and_close():
    images, captions, owner = make_inputs(dim=32)
    expected = naive_mcarcmargin(images, captions, owner, 30.0, 0.1, 0.1)
    images16, captions16 = images.bfloat16().requires_grad_(), captions.bfloat16().requires_grad_()
    value = MCArcMarginLoss()(images16, captions16, owner)
    value.backward()
    assert (
        torch.isfinite(value)
        and torch.isfinite(images16.grad).all()
        and torch.isfinite(captions16.grad).all()
    )
    assert value.item() == pytest.approx(expected, rel=2e-2)


@pytest.mark.parametrize("hard", [0.0, 0.5])
def test_gradcheck_images_and_captions(hard):
    images, captions, owner = make_inputs(dim=5)
    loss = MCArcMarginLoss(scale=4.0, margin=0.3, hard_caption_weight=hard)
    images, captions = images.requires_grad_(), captions.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: loss(x, t, owner), (images, captions))


def test_one_caption_per_image_is_arcmargin_with_captions_as_centres_plus_hard_term():
    s, m, h = 30.0, 0.1, 0.1
    images, captions, _ = make_inputs(batch=6, owner=range(6))
    owner = torch.arange(6)
    arc = ArcMarginLoss(num_classes=6, embed_dim=8, scale=s, margin=m).double()
    with torch.no_grad():
        arc.weight.copy_(captions)
    log_p = torch.log_softmax(arc.logits(images, owner), dim=1)
    # q = 1 on the own caption, so (1 - q) = 0 there and the max runs over the other captions.
    hardest = torch.stack([(-log_p[i]).masked_fill(torch.arange(6) == i, -math.inf).max() for i in range(6)])
    expected = arc(images, owner) + h * hardest.mean()
    value = MCArcMarginLoss(scale=s, margin=m, hard_caption_weight=h)(images, captions, owner)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)


def test_images_without_captions_do_not_change_the_loss():
    images, captions, owner = make_inputs()
    loss = MCArcMarginLoss()
    keep = torch.tensor([0, 1, 3, 4])
    remapped = torch.tensor([0, 1, 9, 2, 3])[owner]  # image index after dropping image 2
    assert loss(images, captions, owner).item() == pytest.approx(
        loss(images[keep], captions, remapped).item(), rel=1e-12
    )


def test_no_captions_gives_a_connected_zero():
    images = torch.randn(4, 8, requires_grad=True)
    value = MCArcMarginLoss()(images, torch.empty(0, 8), torch.empty(0, dtype=torch.long))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(images.grad, torch.zeros_like(images))


def test_soft_target_is_uniform_over_own_captions():
    """With h = 0 and identical own captions, the soft CE equals plain CE against one of them."""
    images, captions, _ = make_inputs(batch=2, owner=range(3))
    captions[1] = captions[0]
    loss = MCArcMarginLoss(hard_caption_weight=0.0)
    owner = torch.tensor([0, 0, 1])
    z = loss.logits(images, captions, owner)
    log_p = torch.log_softmax(z, dim=1)
    expected = (-log_p[0, 0] - log_p[1, 2]) / 2
    assert loss(images, captions, owner).item() == pytest.approx(expected.item(), rel=1e-12)


class TestBadInput:
    def test_owner_out_of_range(self):
        images, captions, owner = make_inputs()
        owner[4] = 5
        with pytest.raises(InputError, match=r"caption_owner must lie in 0\.\.4.*from 0 to 5"):
            MCArcMarginLoss()(images, captions, owner)

    def test_owner_wrong_length_or_dtype(self):
        images, captions, owner = make_inputs()
        with pytest.raises(InputError, match=r"caption_owner must have shape \(10,\)"):
            MCArcMarginLoss()(images, captions, owner[:4])
        with pytest.raises(InputError, match="integers"):
            MCArcMarginLoss()(images, captions, owner.double())

    def test_caption_width_mismatch(self):
        images, captions, owner = make_inputs()
        with pytest.raises(InputError, match=r"image_emb has embedding dimension 8 but caption_emb has 6"):
            MCArcMarginLoss()(images, captions[:, :6], owner)

    def test_non_finite_captions_named(self):
        images, captions, owner = make_inputs()
        captions[0, 0] = math.nan
        with pytest.raises(InputError, match="caption_emb has 1 non-finite"):
            MCArcMarginLoss()(images, captions, owner)

    @pytest.mark.parametrize(
        ("kwargs", "words"),
        [
            ({"scale": -1.0}, "scale must be a finite number > 0"),
            ({"margin": 2.0}, "radians"),
            ({"hard_caption_weight": -0.1}, "hard_caption_weight must be a finite number >= 0"),
        ],
    )
    def test_invalid_constructor_arguments(self, kwargs, words):
        with pytest.raises(ConfigError, match=words):
            MCArcMarginLoss(**kwargs)
