"""ArcMarginLoss against a per-sample loop, closed forms, pytorch-metric-learning and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from mcip.errors import ConfigError, InputError
from mcip.losses import ArcMarginLoss


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _unit(a: list[float]) -> list[float]:
    norm = math.sqrt(_dot(a, a))
    return [x / norm for x in a]


def naive_arcmargin(emb, weight, labels, scale, margin, sub_centers=1) -> float:
    """Per-sample, per-class loop with math.acos / math.cos, written from SPEC section 3."""
    rows, centres, targets = emb.tolist(), [_unit(w) for w in weight.tolist()], labels.tolist()
    num_classes = len(centres) // sub_centers
    total = 0.0
    for row, y in zip(rows, targets, strict=True):
        x = _unit(row)
        logits = []
        for c in range(num_classes):
            cos = max(_dot(x, centres[c * sub_centers + j]) for j in range(sub_centers))
            if c == y and cos > math.cos(math.pi - margin):
                cos = math.cos(math.acos(max(-1.0, min(1.0, cos))) + margin)
            elif c == y:
                cos = cos - margin * math.sin(math.pi - margin)
            logits.append(scale * cos)
        top = max(logits)
        log_sum_exp = top + math.log(sum(math.exp(v - top) for v in logits))
        total += log_sum_exp - logits[y]
    return total / len(rows)


def make_inputs(batch=6, classes=5, dim=8, sub_centers=1, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    loss = ArcMarginLoss(classes, dim, scale=30.0, margin=0.1, sub_centers=sub_centers).to(dtype)
    with torch.no_grad():
        loss.weight.copy_(torch.randn(classes * sub_centers, dim, generator=gen, dtype=dtype))
    emb = torch.randn(batch, dim, generator=gen, dtype=dtype)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    return loss, emb, labels


def emb_in_fallback_branch(loss, labels, seed=1):
    """Embeddings close to MINUS their class centre, so cos_y < cos(pi - m) (the linear branch)."""
    gen = torch.Generator().manual_seed(seed)
    centre = loss.weight.detach()[labels * loss.sub_centers]
    noise = 0.01 * torch.randn(centre.shape, generator=gen, dtype=centre.dtype)
    return -centre / centre.norm(dim=1, keepdim=True) + noise


@pytest.mark.parametrize("sub_centers", [1, 3])
@pytest.mark.parametrize(("scale", "margin"), [(30.0, 0.1), (16.0, 0.5)])
def test_matches_naive_loop_float64(sub_centers, scale, margin):
    loss, emb, labels = make_inputs(sub_centers=sub_centers)
    loss.scale, loss.margin = scale, margin
    expected = naive_arcmargin(emb, loss.weight.detach(), labels, scale, margin, sub_centers)
    assert loss(emb, labels).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_fallback_branch_matches_naive_loop():
    loss, _, labels = make_inputs()
    loss.margin = 0.5
    emb = emb_in_fallback_branch(loss, labels)
    assert (loss.cosine(emb).gather(1, labels[:, None]) < math.cos(math.pi - 0.5)).all()
    expected = naive_arcmargin(emb, loss.weight.detach(), labels, loss.scale, 0.5)
    assert loss(emb, labels).item() == pytest.approx(expected, rel=1e-12)


def test_float32_close_to_float64_reference():
    loss, emb, labels = make_inputs(sub_centers=2)
    expected = naive_arcmargin(emb, loss.weight.detach(), labels, 30.0, 0.1, 2)
    value = loss.float()(emb.float(), labels)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("module_bf16", [False, True])
def test_bfloat16_is_finite_and_close(module_bf16):
    loss, emb, labels = make_inputs(batch=16, dim=32)
    expected = naive_arcmargin(emb, loss.weight.detach(), labels, 30.0, 0.1)
    loss = loss.to(torch.bfloat16) if module_bf16 else loss.float()
    emb16 = emb.to(torch.bfloat16).requires_grad_()
    value = loss(emb16, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb16.grad).all()
    assert emb16.grad.dtype == torch.bfloat16
    assert value.item() == pytest.approx(expected, rel=1e-2)


@pytest.mark.parametrize(("sub_centers", "branch"), [(1, "main"), (2, "main"), (1, "fallback")])
def test_gradcheck_embeddings_and_centres(sub_centers, branch):
    loss, emb, labels = make_inputs(batch=4, classes=3, dim=5, sub_centers=sub_centers)
    loss.scale = 4.0  # keeps the softmax away from saturation so gradients are informative
    if branch == "fallback":
        loss.margin = 0.5
        emb = emb_in_fallback_branch(loss, labels)
        assert (loss.cosine(emb).gather(1, labels[:, None]) < math.cos(math.pi - 0.5)).all()
    weight = loss.weight.detach().clone().requires_grad_()
    emb = emb.clone().requires_grad_()

    def f(e, w):
        return functional_call(loss, {"weight": w}, (e, labels))

    assert torch.autograd.gradcheck(f, (emb, weight))


@pytest.mark.parametrize("classes", [2, 5])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_closed_form_orthogonal_centres(classes, sign):
    """emb = +-centre, centres orthogonal: cos_y = +-1 and every other cosine is 0."""
    s, m = 30.0, 0.1
    loss = ArcMarginLoss(classes, 8, scale=s, margin=m).double()
    with torch.no_grad():
        loss.weight.copy_(3.0 * torch.eye(8, dtype=torch.float64)[:classes])
    labels = torch.arange(classes)
    emb = sign * 2.0 * torch.eye(8, dtype=torch.float64)[:classes]
    phi = math.cos(m) if sign > 0 else -1.0 - m * math.sin(m)
    expected = math.log(1 + (classes - 1) * math.exp(s * 0.0) / math.exp(s * phi))
    assert loss(emb, labels).item() == pytest.approx(expected, rel=1e-9)


def test_logits_shape_and_margin_only_on_target():
    loss, emb, labels = make_inputs()
    logits = loss.logits(emb, labels)
    assert logits.shape == (6, 5)
    cos = loss.cosine(emb)
    off_target = torch.ones_like(cos, dtype=torch.bool).scatter(1, labels[:, None], False)
    assert torch.equal(logits[off_target], 30.0 * cos[off_target])
    assert (logits.gather(1, labels[:, None]) < 30.0 * cos.gather(1, labels[:, None])).all()


def test_centres_are_the_only_parameters_and_xavier_initialised():
    loss = ArcMarginLoss(num_classes=100, embed_dim=64, sub_centers=2)
    params = list(loss.parameters())
    assert len(params) == 1 and params[0] is loss.weight
    assert loss.weight.shape == (200, 64)
    bound = math.sqrt(6.0 / (200 + 64))
    assert loss.weight.abs().max() <= bound and loss.weight.std() > bound / 3


class TestAgainstPytorchMetricLearning:
    """PML's ArcFaceLoss is the same formula: W stored as (D, C), margin in DEGREES, and the same
    fallback branch (``cos - m*sin(m)`` when ``theta > pi - m``; note sin(m) = sin(pi - m)). PML
    computes cos(theta + m) through acos; we use cos*cos(m) - sin*sin(m): equal up to rounding.
    Its default MeanReducer averages over the batch, like ours."""

    @staticmethod
    def pml_loss(loss: ArcMarginLoss):
        pml = pytest.importorskip("pytorch_metric_learning.losses")
        kwargs = {"num_classes": loss.num_classes, "embedding_size": loss.embed_dim}
        margin_deg, scale = math.degrees(loss.margin), loss.scale
        if loss.sub_centers == 1:
            ref = pml.ArcFaceLoss(margin=margin_deg, scale=scale, **kwargs)
        else:
            ref = pml.SubCenterArcFaceLoss(
                margin=margin_deg, scale=scale, sub_centers=loss.sub_centers, **kwargs
            )
        ref.W.data = loss.weight.detach().T.clone()
        return ref

    @pytest.mark.parametrize("sub_centers", [1, 3])
    def test_same_loss(self, sub_centers):
        loss, emb, labels = make_inputs(batch=32, classes=7, dim=16, sub_centers=sub_centers)
        ref = self.pml_loss(loss)
        assert loss(emb, labels).item() == pytest.approx(ref(emb, labels).item(), rel=1e-10)

    def test_same_loss_in_fallback_branch(self):
        loss, _, labels = make_inputs(batch=32, classes=7, dim=16)
        loss.margin = 0.5
        emb = emb_in_fallback_branch(loss, labels)
        ref = self.pml_loss(loss)
        assert loss(emb, labels).item() == pytest.approx(ref(emb, labels).item(), rel=1e-10)


class TestBadInput:
    def test_labels_out_of_range(self):
        loss, emb, labels = make_inputs()
        labels[2] = 5
        with pytest.raises(InputError, match=r"labels must lie in 0\.\.4.*from 0 to 5.*Remap"):
            loss(emb, labels)
        with pytest.raises(InputError, match="from -1"):
            loss(emb, labels.clamp(max=4) - 1)

    def test_labels_wrong_shape_or_dtype(self):
        loss, emb, labels = make_inputs()
        with pytest.raises(InputError, match=r"shape \(6,\)"):
            loss(emb, labels[:3])
        with pytest.raises(InputError, match=r"integers.*\.long\(\)"):
            loss(emb, labels.float())

    def test_embedding_dim_mismatch_names_both(self):
        loss, emb, labels = make_inputs(dim=8)
        with pytest.raises(InputError, match=r"dimension 7.*embed_dim=8"):
            loss(emb[:, :7], labels)

    def test_embedding_not_2d(self):
        loss, emb, labels = make_inputs()
        with pytest.raises(InputError, match=r"2-D.*\(B, D\)"):
            loss(emb[0], labels)

    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_non_finite_embeddings(self, bad):
        loss, emb, labels = make_inputs()
        emb[1, 3] = bad
        with pytest.raises(InputError, match="emb has 1 non-finite"):
            loss(emb, labels)

    @pytest.mark.parametrize(
        ("kwargs", "words"),
        [
            ({"num_classes": 0}, "num_classes must be an integer >= 1"),
            ({"embed_dim": 0}, "embed_dim must be an integer >= 1"),
            ({"scale": 0.0}, "scale must be a finite number > 0"),
            ({"margin": -0.1}, "radians"),
            ({"margin": 28.6}, r"math\.radians\(28\.6\)"),
            ({"sub_centers": 0}, "sub_centers must be an integer >= 1"),
        ],
    )
    def test_invalid_constructor_arguments(self, kwargs, words):
        args = {"num_classes": 3, "embed_dim": 4, **kwargs}
        with pytest.raises(ConfigError, match=words):
            ArcMarginLoss(**args)


@pytest.mark.parametrize("k", [1, 3])
def test_class_mean_initialisation_against_a_loop(k):
    torch.manual_seed(0)
    loss = ArcMarginLoss(num_classes=5, embed_dim=8, sub_centers=k)
    scale = loss.weight.detach().norm(dim=1).mean()
    untouched = loss.weight.detach()[4 * k : 5 * k].clone()
    emb = torch.randn(30, 8)
    labels = torch.randint(0, 4, (30,))  # class 4 has no embedding
    assert loss.init_from_class_means(emb, labels) == len(set(labels.tolist()))
    for c in range(4):
        members = torch.nn.functional.normalize(emb[labels == c], dim=1)
        if len(members) == 0:
            continue
        mean = torch.nn.functional.normalize(members.mean(0), dim=0)
        for j in range(k):
            torch.testing.assert_close(loss.weight[c * k + j], mean * scale)
    torch.testing.assert_close(loss.weight[4 * k : 5 * k], untouched)
    # every embedding's nearest centre is now its class mean: the loss starts low for separable classes
    sep = torch.nn.functional.normalize(
        torch.eye(8)[:4].repeat_interleave(3, 0) + 0.05 * torch.randn(12, 8), dim=1
    )
    fresh = ArcMarginLoss(num_classes=4, embed_dim=8)
    before = fresh(sep, torch.arange(4).repeat_interleave(3))
    fresh.init_from_class_means(sep, torch.arange(4).repeat_interleave(3))
    assert fresh(sep, torch.arange(4).repeat_interleave(3)) < before
