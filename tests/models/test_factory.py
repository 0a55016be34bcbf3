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


def _load(spec: dict):
    kwargs = dict(spec)
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


def test_convolutional_image_towers_load_channels_last(model_specs, monkeypatch, tmp_path):
    """load_model keeps a convolutional image tower (and its input batches) channels-last: the same
    embeddings and gradients as the default format to float rounding, the same fingerprint, a checkpoint
    that loads back in either format; a ViT stays as it is; $MCIP_CHANNELS_LAST=0 turns it off."""
    import torch

    from mcip.models.fingerprint import model_fingerprint

    saved = mcip.save_model(_load(model_specs["composed"]), tmp_path / "m")  # fixed weights
    fast = mcip.load_model(saved)
    convs = [m for m in fast.net.visual.modules() if isinstance(m, torch.nn.Conv2d)]
    assert fast.pixel_format is torch.channels_last and len(convs) > 1
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    monkeypatch.setenv("MCIP_CHANNELS_LAST", "0")
    plain = mcip.load_model(saved)
    assert plain.pixel_format is torch.contiguous_format
    assert all(m.weight.is_contiguous() for m in plain.net.visual.modules() if isinstance(m, torch.nn.Conv2d))
    assert model_fingerprint(fast) == model_fingerprint(plain)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(fast.encode_image(x), plain.encode_image(x), atol=1e-5)
    monkeypatch.delenv("MCIP_CHANNELS_LAST")
    resaved = mcip.load_model(mcip.save_model(fast.eval(), tmp_path / "m2"))  # saved from channels-last
    assert resaved.pixel_format is torch.channels_last and model_fingerprint(resaved) == model_fingerprint(
        plain
    )
    for model in (fast, plain):
        model.train()
        model.encode_image(x).square().sum().backward()
    grads = [(a.grad, b.grad) for a, b in zip(fast.parameters(), plain.parameters(), strict=True)]
    assert all((a is None) == (b is None) for a, b in grads)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in grads if a is not None)
    vit = _load(model_specs["openclip"])
    assert vit.image_conv_layers() == 1 and vit.pixel_format is torch.contiguous_format
    monkeypatch.setenv("MCIP_CHANNELS_LAST", "maybe")
    with pytest.raises(mcip.ConfigError, match="MCIP_CHANNELS_LAST must be 1 or 0"):
        _load(model_specs["composed"])
