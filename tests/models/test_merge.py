"""WiSE-FT weight averaging (mcip.models.merge): the formula by hand, bitwise ends, BatchNorm buffers,
parts, and the refusals."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import mcip
from mcip.errors import ConfigError
from mcip.models.merge import merge_models, merge_record, plan_merge

IMAGE = ("image_encoder", "image_projector")


def _composed(model_specs, **kwargs):
    spec = dict(model_specs["composed"]) | kwargs
    return mcip.load_model(spec.pop("spec"), **spec)


def _fine_tune(model, parts=IMAGE, seed=1):
    """A stand-in for training ``parts``: noise on their parameters and, for BatchNorm, new running
    statistics from forward passes in train mode (the text side stays bitwise equal)."""
    tuned = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tuned.net.named_parameters():
            if tuned.part_of(name) in parts:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        if "image_encoder" in parts:
            tuned.image_encoder.train()
            tuned.image_features(torch.randn(4, 3, tuned.image_size, tuned.image_size, generator=g))
    return tuned.eval()


@pytest.fixture(scope="module")
def pair(model_specs):
    torch.manual_seed(0)
    start = _composed(model_specs)
    return start, _fine_tune(start)


def _states(model):
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_merged_tensors_equal_the_formula_by_hand(pair, alpha):
    start, tuned = pair
    s, f = _states(start), _states(tuned)
    merged = merge_models(start, tuned, alpha).net.state_dict()
    assert merged.keys() == s.keys()
    for name, m in merged.items():
        if not m.is_floating_point():
            assert torch.equal(m, f[name]), name  # integer buffers: the fine-tuned model's
            continue
        by_hand = (1 - alpha) * s[name].double() + alpha * f[name].double()
        assert torch.equal(m, by_hand.to(m.dtype)), name
        naive = (1 - alpha) * s[name] + alpha * f[name]  # the same formula in float32: within rounding
        torch.testing.assert_close(m, naive, rtol=1e-6, atol=1e-7)
    assert _states(start).keys() == s.keys() and all(torch.equal(v, s[k]) for k, v in _states(start).items())
    assert all(torch.equal(v, f[k]) for k, v in _states(tuned).items())  # inputs are left unchanged


def test_alpha_0_is_the_start_and_1_the_finetuned_model_bitwise(pair):
    start, tuned = pair
    for alpha, expected in ((0, start), (1, tuned)):
        merged = merge_models(start, tuned, alpha).net.state_dict()
        ref = expected.net.state_dict()
        floats = [n for n, t in merged.items() if t.is_floating_point()]
        assert all(torch.equal(merged[n], ref[n]) for n in floats)


def test_batchnorm_running_statistics_are_interpolated(pair):
    start, tuned = pair
    s, f = start.net.state_dict(), tuned.net.state_dict()
    stats = [n for n in s if n.endswith(("running_mean", "running_var")) and not torch.equal(s[n], f[n])]
    assert stats, "the fine-tuning stand-in must change BatchNorm statistics"
    plan = plan_merge(start, tuned)
    assert set(stats) <= {n for n, _, _ in plan.pairs}
    merged = merge_models(start, tuned, 0.5).net.state_dict()
    for n in stats:
        torch.testing.assert_close(merged[n], (s[n] + f[n]) / 2)
    counters = [n for n in s if n.endswith("num_batches_tracked") and not torch.equal(s[n], f[n])]
    assert counters and all(torch.equal(merged[n], f[n]) for n in counters)


def test_only_the_parts_that_differ_are_merged_and_equal_tensors_are_copied(pair):
    start, tuned = pair
    plan = plan_merge(start, tuned)
    assert plan.parts == IMAGE
    s = start.net.state_dict()
    merged = merge_models(start, tuned, 0.37).net.state_dict()
    text = [n for n in s if start.part_of(n) not in IMAGE]
    assert text and all(torch.equal(merged[n], s[n]) for n in text)
    record = merge_record(start, tuned, 0.37, plan)
    assert record["alpha"] == 0.37 and record["parts"] == list(IMAGE)
    assert record["tensors_interpolated"] == len(plan.pairs) and record["tensors_identical"] == plan.identical


def test_parts_restricts_the_merge_the_rest_is_the_finetuned_model(pair):
    start, tuned = pair
    s, f = start.net.state_dict(), tuned.net.state_dict()
    merged = merge_models(start, tuned, 0.5, parts=["image_projector"]).net.state_dict()
    for name in s:
        if start.part_of(name) == "image_encoder":
            assert torch.equal(merged[name], f[name]), name
        elif start.part_of(name) == "image_projector":
            torch.testing.assert_close(merged[name], (s[name] + f[name]) / 2)
    with pytest.raises(ConfigError, match="Valid parts"):
        merge_models(start, tuned, 0.5, parts=["image_tower"])
    with pytest.raises(ConfigError, match="at least one part"):
        merge_models(start, tuned, 0.5, parts=[])


def test_merged_model_saves_and_reloads_with_its_record(pair, tmp_path):
    start, tuned = pair
    merged = merge_models(start, tuned, 0.25)
    record = merge_record(start, tuned, 0.25, plan_merge(start, tuned))
    path = mcip.save_model(merged, tmp_path / "merged", extra={"wise": record})
    again = mcip.load_model(path)
    assert all(torch.equal(v, merged.net.state_dict()[k]) for k, v in again.net.state_dict().items())
    meta = json.loads((path / "mcip_model.json").read_text())
    assert meta["extra"]["wise"]["alpha"] == 0.25 and meta["extra"]["wise"]["parts"] == list(IMAGE)


@pytest.mark.parametrize("alpha", [1.5, -0.1, math.nan, math.inf, True, "0.5", None])
def test_alpha_must_be_a_finite_number_in_0_1(pair, alpha):
    start, tuned = pair
    with pytest.raises(ConfigError, match=r"alpha"):
        merge_models(start, tuned, alpha)


def test_models_of_different_backends_are_refused(model_specs, pair):
    other = mcip.load_model(model_specs["openclip"]["spec"])
    with pytest.raises(ConfigError, match="Cannot merge a openclip model with a composed model"):
        merge_models(other, pair[1], 0.5)


def test_models_of_different_widths_are_refused(model_specs, pair):
    narrow = _composed(model_specs, embed_dim=8)
    with pytest.raises(ConfigError, match=r"shapes differ.*image_proj.weight"):
        merge_models(narrow, pair[1], 0.5)


def test_a_dropped_projector_against_a_kept_one_is_refused(model_specs):
    spec = model_specs["openclip"]["spec"]
    torch.manual_seed(0)
    start = mcip.load_model(spec)
    dropped = copy.deepcopy(start)
    dropped.drop_image_projector()
    with pytest.raises(ConfigError, match=r"surgery.*drop_image_projector.*--drop-projector"):
        merge_models(start, dropped, 0.5)
    same = copy.deepcopy(start)
    same.drop_image_projector()
    assert merge_models(same, dropped, 0.5).embed_dim == dropped.embed_dim  # same surgery: fine


def test_different_precisions_are_refused(pair):
    start, tuned = pair
    with pytest.raises(ConfigError, match="precisions"):
        merge_models(copy.deepcopy(start).to(torch.float64), tuned, 0.5)
