"""load_model's dispatch and its errors."""

from __future__ import annotations

import pytest

import mcip


def test_unknown_prefix_lists_backends():
    with pytest.raises(mcip.ConfigError, match=r"known prefixes: .*openclip:"):
        mcip.load_model("clip:ViT-B-32")


def test_empty_model_after_prefix():
    with pytest.raises(mcip.ConfigError, match="names no model"):
        mcip.load_model("openclip:")


def test_bare_weights_file_asks_for_architecture(tmp_path):
    with pytest.raises(mcip.ModelLoadError, match=r"openclip:ViT-L-14-336/"):
        mcip.load_model("MCIP-ViT-L-14-336.pth")


def test_plain_directory_is_not_a_model(tmp_path):
    with pytest.raises(mcip.ModelLoadError, match=r"mcip_model\.json"):
        mcip.load_model(tmp_path)


def test_options_do_not_apply_to_saved_models(tiny_model, tmp_path):
    path = mcip.save_model(tiny_model, tmp_path / "m")
    with pytest.raises(mcip.ConfigError, match="do not apply"):
        mcip.load_model(path, embed_dim=8)
    assert mcip.load_model(f"mcip:{path}").embed_dim == tiny_model.embed_dim


def test_corrupt_weights_file_is_reported(tiny_model, tmp_path):
    import safetensors.torch as st

    path = mcip.save_model(tiny_model, tmp_path / "m")
    state = st.load_file(str(path / "model.safetensors"))
    state.pop(next(k for k in state if k.endswith("weight")))
    st.save_file(state, str(path / "model.safetensors"))
    with pytest.raises(mcip.ModelLoadError, match="missing"):
        mcip.load_model(path)


def test_backends_listed():
    assert mcip.list_backends() == ["composed", "hf", "openclip"]


def test_bf16_precision_encodes(model_specs):
    import torch

    model = mcip.load_model(model_specs["openclip"]["spec"], precision="bf16")
    assert model.dtype == torch.bfloat16
    emb = model.encode_image(torch.randn(2, 3, 32, 32))
    assert emb.dtype == torch.bfloat16 and torch.isfinite(emb).all()
    with pytest.raises(mcip.ConfigError, match="fp32, bf16, fp16"):
        mcip.load_model(model_specs["openclip"]["spec"], precision="half")
