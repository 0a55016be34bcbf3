"""InfoNCELoss (single process) against a loop over pairs, a closed form and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mcip.errors import ConfigError, InputError
from mcip.losses import InfoNCELoss


def naive_infonce(images, texts, logit_scale: float, max_scale: float = 100.0) -> float:
    """Both cross-entropies by explicit loops over rows and columns, from SPEC section 3."""
    xs, ts = images.tolist(), texts.tolist()
    tau = min(math.exp(logit_scale), max_scale)
    n = len(xs)
    logits = [[tau * sum(a * b for a, b in zip(x, t, strict=True)) for t in ts] for x in xs]

    def ce(row: list[float], target: int) -> float:
        top = max(row)
        return top + math.log(sum(math.exp(v - top) for v in row)) - row[target]

    image_to_text = sum(ce(logits[i], i) for i in range(n)) / n
    text_to_image = sum(ce([logits[j][i] for j in range(n)], i) for i in range(n)) / n
    return (image_to_text + text_to_image) / 2


def make_inputs(batch=6, dim=8, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(batch, dim, generator=gen, dtype=dtype), dim=1)
    texts = F.normalize(images + 0.8 * torch.randn(batch, dim, generator=gen, dtype=dtype), dim=1)
    return images, texts


@pytest.mark.parametrize("logit_scale", [math.log(1 / 0.07), 0.0, math.log(250.0)])
def test_matches_naive_loop_float64(logit_scale):
    images, texts = make_inputs()
    value = InfoNCELoss()(images, texts, torch.tensor(logit_scale, dtype=torch.float64))
    assert value.item() == pytest.approx(naive_infonce(images, texts, logit_scale), rel=1e-12)


def test_float32_and_bfloat16_close_to_float64_reference():
    images, texts = make_inputs(batch=16, dim=32)
    expected = naive_infonce(images, texts, math.log(1 / 0.07))
    scale = torch.tensor(math.log(1 / 0.07))
    assert InfoNCELoss()(images.float(), texts.float(), scale).item() == pytest.approx(expected, rel=1e-5)
    images16, texts16 = images.bfloat16().requires_grad_(), texts.bfloat16().requires_grad_()
    value = InfoNCELoss()(images16, texts16, scale)
    value.backward()
    assert (
        torch.isfinite(value) and torch.isfinite(images16.grad).all() and torch.isfinite(texts16.grad).all()
    )
    assert value.item() == pytest.approx(expected, rel=2e-2)


def test_gradcheck_including_logit_scale():
    images, texts = make_inputs(batch=4, dim=5)
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    inputs = (images.requires_grad_(), texts.requires_grad_(), scale)
    assert torch.autograd.gradcheck(InfoNCELoss(), inputs)


def test_logit_scale_gradient_stops_only_above_the_cap():
    images, texts = make_inputs()
    below = torch.tensor(math.log(50.0), dtype=torch.float64, requires_grad=True)
    above = torch.tensor(math.log(150.0), dtype=torch.float64, requires_grad=True)
    InfoNCELoss()(images, texts, below).backward()
    InfoNCELoss()(images, texts, above).backward()
    assert below.grad.abs() > 0 and above.grad == 0


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("logit_scale", [math.log(10.0), math.log(1000.0)])
def test_closed_form_identical_orthonormal_sets(batch, logit_scale):
    """I = T = orthonormal rows: logits = tau * eye, each CE = log(1 + (B - 1) exp(-tau))."""
    basis = torch.eye(8, dtype=torch.float64)[:batch]
    tau = min(math.exp(logit_scale), 100.0)
    expected = math.log(1 + (batch - 1) * math.exp(-tau))
    value = InfoNCELoss()(basis, basis, torch.tensor(logit_scale, dtype=torch.float64))
    assert value.item() == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_inputs_are_used_as_given():
    """No renormalisation: doubling the image embeddings equals adding log(2) to logit_scale."""
    images, texts = make_inputs()
    loss = InfoNCELoss()
    scale = torch.tensor(1.0, dtype=torch.float64)
    assert loss(2 * images, texts, scale).item() == pytest.approx(
        loss(images, texts, scale + math.log(2)).item(), rel=1e-12
    )


def test_accepts_a_python_float_and_a_one_element_parameter():
    images, texts = make_inputs()
    param = torch.nn.Parameter(torch.full((1,), 2.0, dtype=torch.float64))
    assert InfoNCELoss()(images, texts, 2.0).item() == pytest.approx(
        InfoNCELoss()(images, texts, param).item()
    )


class TestBadInput:
    def test_shape_mismatch(self):
        images, texts = make_inputs()
        with pytest.raises(InputError, match=r"image_emb has shape \(6, 8\) but text_emb has shape \(5, 8\)"):
            InfoNCELoss()(images, texts[:5], 1.0)

    def test_non_finite_text(self):
        images, texts = make_inputs()
        texts[2, 2] = math.inf
        with pytest.raises(InputError, match="text_emb has 1 non-finite"):
            InfoNCELoss()(images, texts, 1.0)

    def test_logit_scale_not_scalar_or_not_finite(self):
        images, texts = make_inputs()
        with pytest.raises(InputError, match=r"logit_scale must be a scalar"):
            InfoNCELoss()(images, texts, torch.ones(2))
        with pytest.raises(InputError, match=r"logit_scale has 1 non-finite"):
            InfoNCELoss()(images, texts, math.nan)

    def test_empty_batch(self):
        with pytest.raises(InputError, match="image_emb is empty"):
            InfoNCELoss()(torch.empty(0, 4), torch.empty(0, 4), 1.0)

    @pytest.mark.parametrize("bad", [0.0, -1.0, math.inf])
    def test_invalid_max_logit_scale(self, bad):
        with pytest.raises(ConfigError, match="max_logit_scale must be a finite number > 0"):
            InfoNCELoss(max_logit_scale=bad)


def test_matches_open_clip_clip_loss():
    """open_clip's ClipLoss takes tau = exp(logit_scale) (already exponentiated)."""
    open_clip_loss = pytest.importorskip("open_clip.loss")
    images, texts = make_inputs(batch=8)
    logit_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
    expected = open_clip_loss.ClipLoss()(images, texts, logit_scale.exp())
    assert InfoNCELoss()(images, texts, logit_scale).item() == pytest.approx(expected.item(), rel=1e-12)
