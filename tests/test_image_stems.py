"""The frozen image stem run once per image (mcip.image_stems): every consumer gives what the whole
encoder gives (the reference: the same call without a registered stem, i.e. the full forward), the stem
really did not run again, and a changed stem, an unreadable file or a size limit falls back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mcip
from mcip.data import load_records
from mcip.embed import cached_image_embeddings
from mcip.engine.validate import Validator
from mcip.errors import ConfigError
from mcip.image_stems import (
    REGISTRY,
    cached_image_stem,
    image_stems,
    register_image_stem,
    registered_stem_groups,
)
from mcip.models.fingerprint import image_stem_fingerprint
from mcip.stages.inputs import read_inputs
from mcip.stages.run import run_stage
from mcip.wise.encode import ValImages
from tests.train.synth import make_dataset
from tests.train.test_stages import _config  # the stage tests' fast settings

GROUPS = 2  # the stem and the first block of test_efficientnet


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth"), per_class=3)


def _composed(model_specs, seed: int = 0):
    torch.manual_seed(seed)
    kwargs = dict(model_specs["composed"])
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


def _same_stem_other_top(model):
    """A copy of ``model`` whose blocks above the stem (and projector) differ: a fine-tuned model."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in other.net.named_parameters():
            if not name.startswith(("visual.conv_stem", "visual.bn1", "visual.blocks.0.")):
                p.mul_(1.1).add_(0.01)
    return other


def _no_stem(model, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("the stem ran again")

    monkeypatch.setattr(model.image_encoder.conv_stem, "forward", refuse)


def _paths(synth, n=12):
    return [r.path for r in load_records(synth)[:n]]


def test_embeddings_through_the_stem_cache_equal_the_whole_encoder(model_specs, synth, tmp_path, monkeypatch):
    base = _composed(model_specs)
    tuned = _same_stem_other_top(base)
    paths = _paths(synth)
    expected = np.asarray(cached_image_embeddings(tuned, paths, tmp_path / "plain"), dtype=np.float32)
    assert register_image_stem(base, GROUPS, tmp_path / "c")
    assert registered_stem_groups(tuned, tmp_path / "c") == GROUPS
    cached_image_stem(base, paths, tmp_path / "c", GROUPS)  # filled by the start
    _no_stem(tuned, monkeypatch)
    got = np.asarray(cached_image_embeddings(tuned, paths, tmp_path / "c"), dtype=np.float32)
    np.testing.assert_array_equal(got, expected)


def test_another_stem_is_not_reused(model_specs, synth, tmp_path):
    base = _composed(model_specs)
    register_image_stem(base, GROUPS, tmp_path)
    other = _composed(model_specs, seed=1)
    assert registered_stem_groups(other, tmp_path) == 0
    assert image_stems(other, _paths(synth), tmp_path) is None
    with torch.no_grad():
        next(base.image_encoder.blocks[0].parameters()).add_(0.1)  # the stem changed (a block inside it)
    assert registered_stem_groups(base, tmp_path) == 0


def test_registry_keeps_one_entry_per_stem(model_specs, tmp_path):
    base = _composed(model_specs)
    for _ in range(3):
        register_image_stem(base, GROUPS, tmp_path)
    register_image_stem(base, GROUPS + 1, tmp_path)
    entries = json.loads((tmp_path / REGISTRY).read_text())
    assert [e["groups"] for e in entries] == [GROUPS, GROUPS + 1]
    assert registered_stem_groups(base, tmp_path) == GROUPS + 1  # the deepest stem wins
    kwargs = dict(model_specs["openclip"])
    assert not register_image_stem(mcip.load_model(kwargs.pop("spec"), **kwargs), 1, tmp_path)


def test_unreadable_image_is_a_nan_row_as_without_stems(model_specs, synth, tmp_path):
    base = _composed(model_specs)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [*_paths(synth, 5), broken, *_paths(synth, 8)[5:]]
    expected = np.asarray(cached_image_embeddings(base, paths, tmp_path / "plain"), dtype=np.float32)
    register_image_stem(base, GROUPS, tmp_path / "c")
    stems = cached_image_stem(base, paths, tmp_path / "c", GROUPS)
    assert np.isnan(stems.rows[5]).all() and not np.isnan(stems.rows[4]).any()
    got = np.asarray(cached_image_embeddings(base, paths, tmp_path / "c"), dtype=np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(got[~np.isnan(got)], expected[~np.isnan(expected)])


def test_the_size_limit_falls_back_to_the_whole_encoder(model_specs, synth, tmp_path, monkeypatch):
    base = _composed(model_specs)
    register_image_stem(base, GROUPS, tmp_path)
    paths = _paths(synth, 4)
    one = 16 * 16 * 16  # test_efficientnet after its stem and first block at 32 px: 16 channels, stride 2
    monkeypatch.setenv("MCIP_STEM_CACHE_BYTES", str(4 * 4 * one))  # four images' float32 rows fit
    assert image_stems(base, paths, tmp_path).rows.shape == (4, one)
    monkeypatch.setenv("MCIP_STEM_CACHE_BYTES", str(4 * 4 * one - 1))  # one byte short
    assert image_stems(base, paths, tmp_path) is None
    monkeypatch.setenv("MCIP_STEM_CACHE_BYTES", "0")
    assert image_stems(base, paths, tmp_path) is None
    monkeypatch.setenv("MCIP_STEM_CACHE_BYTES", "4GB")
    with pytest.raises(ConfigError, match="MCIP_STEM_CACHE_BYTES must be a whole number of bytes"):
        image_stems(base, paths, tmp_path)


def test_a_damaged_registry_is_ignored(model_specs, tmp_path):
    base = _composed(model_specs)
    (tmp_path / REGISTRY).write_text('[{"fingerprint": 3, "groups": "x"}, "junk", {"groups": 2}]')
    assert registered_stem_groups(base, tmp_path) == 0
    (tmp_path / REGISTRY).write_text("{not json")
    assert registered_stem_groups(base, tmp_path) == 0
    assert register_image_stem(base, GROUPS, tmp_path)  # rewritten with the good entry
    assert registered_stem_groups(base, tmp_path) == GROUPS


def test_validator_on_stems_equals_the_full_validation(model_specs, synth, tmp_path, monkeypatch):
    base = _composed(model_specs)
    tuned = _same_stem_other_top(base)
    val = load_records(synth)[:15]
    full = Validator(tuned, val)()
    checker = Validator(tuned, val)
    register_image_stem(base, GROUPS, tmp_path)
    checker.image_stems = cached_image_stem(base, [r.path for r in val], tmp_path, GROUPS)
    with monkeypatch.context() as m:
        _no_stem(tuned, m)
        got = checker()
    assert got.keys() == full.keys() and got
    for k in full:
        assert got[k] == pytest.approx(full[k], abs=1e-9), k
    # the stem moved (e.g. it was trained after all): the validator runs the whole encoder again
    with torch.no_grad():
        tuned.image_encoder.conv_stem.weight.mul_(0.5)
    moved = Validator(tuned, val)()
    assert checker() == moved and moved != full


def test_wise_val_images_use_the_stems(model_specs, synth, tmp_path, monkeypatch):
    base = _composed(model_specs)
    tuned = _same_stem_other_top(base).eval()
    val = load_records(synth)[:10]
    plain = ValImages(tuned, val)
    expected, rows = plain.encode(tuned)
    register_image_stem(base, GROUPS, tmp_path)
    staged = ValImages(tuned, val, cache_dir=tmp_path)
    staged.encode(tuned)  # fills the val stems
    _no_stem(tuned, monkeypatch)
    got, got_rows = staged.encode(tuned)
    assert staged.pixels is None  # nothing decoded: the stems replaced the pixels
    assert torch.equal(got_rows, rows) and torch.equal(got, expected)


def test_stage_with_a_frozen_stem_registers_it_and_validates_on_it(model_specs, synth, tmp_path, monkeypatch):
    """A GPR-FT stage with freeze_image_groups: the stem is registered and unchanged by training (the
    saved model still has it), its validations ran on the stems, and step 0 equals a plain validator."""
    plain_call = Validator.__call__
    used = []

    def checked(self, task=None):
        used.append(self.image_stems is not None and self.image_stems.matches(self.model))
        return plain_call(self, task)

    monkeypatch.setattr(Validator, "__call__", checked)
    start = mcip.save_model(_composed(model_specs), tmp_path / "base")
    cfg = _config("gpr", start, synth, tmp_path, f"freeze_image_groups={GROUPS}")
    result = run_stage(cfg, progress=False)
    assert len(used) >= 2 and all(used)
    cache = Path(cfg.cache_dir)
    trained, begun = mcip.load_model(result.model_dir), mcip.load_model(start)
    assert registered_stem_groups(trained, cache) == GROUPS
    assert image_stem_fingerprint(trained, GROUPS) == image_stem_fingerprint(begun, GROUPS)
    first = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    reference = Validator(begun, read_inputs(cfg).val)()
    for k, v in reference.items():
        assert first[f"val/{k}"] == pytest.approx(v, abs=1e-4), k


def test_a_stage_without_validation_still_registers_its_stem(model_specs, synth, tmp_path):
    """No val split (val_fraction 0): nothing to validate, but later encodes still share the stem."""
    start = mcip.save_model(_composed(model_specs), tmp_path / "base")
    cfg = _config("gpr", start, synth, tmp_path, f"freeze_image_groups={GROUPS}", "data.val_fraction=0")
    result = run_stage(cfg, progress=False)
    assert registered_stem_groups(mcip.load_model(result.model_dir), Path(cfg.cache_dir)) == GROUPS
