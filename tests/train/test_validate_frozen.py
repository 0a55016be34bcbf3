"""Validation that runs only what trains: a frozen tower's val features (or a fixed text side's val
embeddings) cached once give the results of the full forward pass, and the frozen tower never runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mcip
from mcip.data import load_records
from mcip.embed import cached_image_features, cached_text_embeddings, cached_text_features
from mcip.engine.validate import Validator
from mcip.stages.inputs import read_inputs
from mcip.stages.run import run_stage
from tests.train.synth import make_dataset
from tests.train.test_stages import _config  # the stage tests' fast settings


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth"), per_class=4)


@pytest.fixture()
def composed(model_specs):
    torch.manual_seed(0)
    kwargs = dict(model_specs["composed"])
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


def _no_towers(model, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("a frozen tower ran during validation")

    monkeypatch.setattr(model, "image_features", refuse)
    monkeypatch.setattr(model, "text_features", refuse)


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-4), k


def test_cached_features_give_the_full_forward_results(composed, synth, tmp_path, monkeypatch):
    val = load_records(synth)[:20]
    full = Validator(composed, val)()  # the reference: every validation encodes with both towers
    texts = Validator(composed, val).caption_texts
    frozen = Validator(composed, val)
    frozen.image_features = cached_image_features(composed, [r.path for r in val], tmp_path)
    frozen.text_features = cached_text_features(composed, texts, tmp_path)
    _no_towers(composed, monkeypatch)
    _close(frozen(), full)
    assert {"i2i_map", "t2i_r1", "t2i_r5", "t2i_r10"} <= full.keys()


def test_fixed_text_embeddings_give_the_full_forward_results(composed, synth, tmp_path, monkeypatch):
    val = load_records(synth)[:20]
    full = Validator(composed, val)()
    fixed = Validator(composed, val)
    texts = fixed.caption_texts
    fixed.text_embeddings = cached_text_embeddings(composed, texts, tmp_path, dtype="float32")
    monkeypatch.setattr(composed, "text_features", lambda *_: (_ for _ in ()).throw(AssertionError()))
    _close(fixed(), full)


@pytest.mark.parametrize(
    ("stage", "extra"),
    [("align", ["align_parts=[image_projector,text_projector,logit_scale]"]), ("gpr", []), ("mcip", [])],
)
def test_stage_validations_equal_a_full_validator(stage, extra, model_specs, synth, tmp_path, monkeypatch):
    """Step 0 of a stage's metrics (its cached-feature validation of the starting model) equals a plain
    validator's full forward pass over the same val records; every validation of the stage ran on the
    cached features (align: both frozen towers'; gpr/mcip: the fixed text side's embeddings)."""
    plain_call = Validator.__call__
    calls = []

    def checked(self, task=None):
        cached = (self.image_features, self.text_features) if stage == "align" else (self.text_embeddings,)
        calls.append(all(c is not None for c in cached))
        return plain_call(self, task)

    monkeypatch.setattr(Validator, "__call__", checked)
    torch.manual_seed(0)
    kwargs = dict(model_specs["composed"])
    base = mcip.save_model(mcip.load_model(kwargs.pop("spec"), **kwargs), tmp_path / "base")
    result = run_stage(_config(stage, base, synth, tmp_path, *extra), progress=False)
    first = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0
    cfg = _config(stage, base, synth, tmp_path / "again", *extra)
    val = read_inputs(cfg).val
    assert len(calls) >= 2 and all(calls)  # the start and the end of the run
    reference = Validator(mcip.load_model(base), val)()
    _close({k[4:]: v for k, v in first.items() if k.startswith("val/") and k != "val/combined"}, reference)


def test_cached_features_skip_an_unreadable_val_image_as_the_full_pass_does(composed, synth, tmp_path):
    """A corrupt val image is a NaN row of the feature cache; validation leaves it out, as encoding does."""
    from dataclasses import replace

    val = load_records(synth)[:20]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    val = [*val, replace(val[0], path=broken)]
    full = Validator(composed, val)()
    frozen = Validator(composed, val)
    features = cached_image_features(composed, [r.path for r in val], tmp_path)
    assert bool(torch.isnan(torch.from_numpy(features[-1].copy())).all())
    frozen.image_features = features
    _close(frozen(), full)
