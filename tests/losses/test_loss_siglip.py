"""SigLIPLoss (single process) against a loop over pairs, a closed form and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mcip.errors import InputError
from mcip.losses import SigLIPLoss


def _log_sigmoid(v: float) -> float:
    return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))


def naive_siglip(images, texts, logit_scale: float, logit_bias: float) -> float:
    """-sum over all (i, j) of log sigmoid(label_ij * logit_ij), divided by B."""
    xs, ts = images.tolist(), texts.tolist()
    t = math.exp(logit_scale)
    total = 0.0
    for i, x in enumerate(xs):
        for j, y in enumerate(ts):
            logit = t * sum(a * b for a, b in zip(x, y, strict=True)) + logit_bias
            total -= _log_sigmoid(logit if i == j else -logit)
    return total / len(xs)


def make_inputs(batch=6, dim=8, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(batch, dim, generator=gen, dtype=dtype), dim=1)
    texts = F.normalize(images + 0.8 * torch.randn(batch, dim, generator=gen, dtype=dtype), dim=1)
    return images, texts


@pytest.mark.parametrize(("logit_scale", "logit_bias"), [(math.log(10.0), -10.0), (0.0, 0.0), (4.0, 2.0)])
def test_matches_naive_loop_float64(logit_scale, logit_bias):
    images, texts = make_inputs()
    value = SigLIPLoss()(images, texts, logit_scale, logit_bias)  # Python floats: no float32 rounding
    assert value.item() == pytest.approx(naive_siglip(images, texts, logit_scale, logit_bias), rel=1e-12)


def test_float32_and_bfloat16_close_to_float64_reference():
    images, texts = make_inputs(batch=16, dim=32)
    expected = naive_siglip(images, texts, math.log(10.0), -10.0)
    scale, bias = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    assert SigLIPLoss()(images.float(), texts.float(), scale, bias).item() == pytest.approx(
        expected, rel=1e-5
    )
    images16, texts16 = images.bfloat16().requires_grad_(), texts.bfloat16().requires_grad_()
    value = SigLIPLoss()(images16, texts16, scale, bias)
    value.backward()
    assert (
        torch.isfinite(value) and torch.isfinite(images16.grad).all() and torch.isfinite(texts16.grad).all()
    )
    assert value.item() == pytest.approx(expected, rel=2e-2)


def test_gradcheck_including_scale_and_bias():
    images, texts = make_inputs(batch=4, dim=5)
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    inputs = (images.requires_grad_(), texts.requires_grad_(), scale, bias)
    assert torch.autograd.gradcheck(SigLIPLoss(), inputs)


@pytest.mark.parametrize("batch", [1, 5])
def test_closed_form_identical_orthonormal_sets(batch):
    """logits = t * eye + b: loss = -logsigmoid(t + b) - (B - 1) * logsigmoid(-b)."""
    basis = torch.eye(8, dtype=torch.float64)[:batch]
    t, b = 10.0, -3.0
    expected = -_log_sigmoid(t + b) - (batch - 1) * _log_sigmoid(-b)
    value = SigLIPLoss()(basis, basis, torch.tensor(math.log(t), dtype=torch.float64), b)
    assert value.item() == pytest.approx(expected, rel=1e-12)


class TestBadInput:
    def test_shape_mismatch(self):
        images, texts = make_inputs()
        with pytest.raises(InputError, match=r"same \(B, D\) shape"):
            SigLIPLoss()(images, texts[:, :4], 1.0, 0.0)

    def test_non_finite_bias(self):
        images, texts = make_inputs()
        with pytest.raises(InputError, match="logit_bias has 1 non-finite"):
            SigLIPLoss()(images, texts, 1.0, math.inf)

    def test_image_not_a_tensor(self):
        _, texts = make_inputs()
        with pytest.raises(InputError, match=r"image_emb must be a torch\.Tensor"):
            SigLIPLoss()(texts.tolist(), texts, 1.0, 0.0)


def test_matches_open_clip_siglip_loss():
    """open_clip's SigLipLoss takes t = exp(logit_scale) (already exponentiated) and the bias."""
    open_clip_loss = pytest.importorskip("open_clip.loss")
    images, texts = make_inputs(batch=8)
    logit_scale = torch.tensor(math.log(10.0), dtype=torch.float64)
    bias = torch.tensor(-10.0, dtype=torch.float64)
    expected = open_clip_loss.SigLipLoss()(images, texts, logit_scale.exp(), bias)
    assert SigLIPLoss()(images, texts, logit_scale, bias).item() == pytest.approx(expected.item(), rel=1e-12)
