"""open_clip backend: same numbers as open_clip itself; strict loading of full state dicts (the paper's
released checkpoints are such files); readable errors."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

import mcip
from tests.conftest import random_images

TEXTS = ["a photo of a dog", "a red car"]


@pytest.fixture
def model(tiny_openclip):
    torch.manual_seed(0)
    return mcip.load_model(f"openclip:{tiny_openclip}")


def test_embeddings_equal_open_clip(model):
    pixels = random_images(2, model.image_size)
    tokens = open_clip.get_tokenizer(model.arch)(TEXTS)
    torch.testing.assert_close(model.encode_image(pixels), model.net.encode_image(pixels, normalize=True))
    torch.testing.assert_close(model.encode_text(TEXTS), model.net.encode_text(tokens, normalize=True))


def test_parts_follow_open_clip_names(model):
    assert model.part_of("visual.proj") == "image_projector"
    assert model.part_of("visual.conv1.weight") == "image_encoder"
    assert model.part_of("text_projection") == "text_projector"
    assert model.part_of("token_embedding.weight") == "text_encoder"
    assert model.text_block_prefixes() == [f"transformer.resblocks.{i}" for i in range(3)]
    assert model.text_final_norm_prefixes() == ["ln_final"]


def test_full_state_dict_loads_strictly(model, tmp_path, tiny_openclip):
    """The released MCIP-*.pth files are plain open_clip state dicts: the same mechanism (every form:
    tests/models/test_released_checkpoints.py)."""
    path = tmp_path / "MCIP-tiny.pth"
    torch.save(model.net.state_dict(), path)
    torch.manual_seed(123)  # a different random init, so equality proves the weights were loaded
    loaded = mcip.load_model(f"openclip:{tiny_openclip}/{path}")
    for (n, a), (_, b) in zip(model.net.state_dict().items(), loaded.net.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=n)


def test_ddp_prefixed_state_dict_loads(model, tmp_path, tiny_openclip):
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.net.state_dict().items()}}, path)
    loaded = mcip.load_model(f"openclip:{tiny_openclip}/{path}")
    torch.testing.assert_close(loaded.net.visual.proj, model.net.visual.proj)


def test_wrong_keys_fail_with_readable_message(model, tmp_path, tiny_openclip):
    sd = model.net.state_dict()
    sd.pop("text_projection")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(mcip.ModelLoadError, match="does not match this architecture") as info:
        mcip.load_model(f"openclip:{tiny_openclip}/{path}")
    assert "text_projection" in str(info.value)


def test_mismatched_embedding_dims_fail(tmp_path, tiny_openclip):
    import open_clip

    cfg = open_clip.get_model_config(tiny_openclip)
    cfg["embed_dim"] = 24
    cfg_path = tmp_path / "mcip-test-tiny-vit-24.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_path)
    other = open_clip.create_model("mcip-test-tiny-vit-24")
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(mcip.ModelLoadError, match="size mismatch"):
        mcip.load_model(f"openclip:{tiny_openclip}/{path}")


def test_missing_checkpoint_file(tiny_openclip, tmp_path):
    with pytest.raises(mcip.ModelLoadError, match="Checkpoint file not found"):
        mcip.load_model(f"openclip:{tiny_openclip}/{tmp_path}/MCIP-ViT-L-14-336.pth")


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(mcip.ConfigError, match="Did you mean: ViT-L-14-336"):
        mcip.load_model("openclip:ViT-L-14-33")


def test_unknown_pretrained_tag_lists_tags_without_downloading():
    with pytest.raises(mcip.ConfigError, match="openai"):
        mcip.load_model("openclip:ViT-B-32/not-a-tag")


def test_saved_custom_arch_reloads_without_registration(model, tmp_path):
    """The JSON carries the architecture config, so a saved custom model reloads in a fresh process."""
    import subprocess
    import sys

    path = mcip.save_model(model, tmp_path / "m")
    code = f"import mcip; m = mcip.load_model(r'{path}'); print(m.arch, m.embed_dim)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [model.arch, "16"]
