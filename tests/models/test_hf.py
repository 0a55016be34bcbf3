"""transformers backend: same numbers as transformers' own get_*_features; errors for bad input."""

from __future__ import annotations

import pytest
import torch

import mcip
from tests.conftest import random_images

TEXTS = ["a photo of a dog", "a red car on a tree"]


@pytest.mark.parametrize("which", ["tiny_hf_clip_dir", "tiny_hf_siglip_dir"])
def test_embeddings_equal_transformers(which, request):
    path = request.getfixturevalue(which)
    model = mcip.load_model(f"hf:{path}")
    pixels = random_images(2, model.image_size)
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        ref_img = model.net.get_image_features(pixel_values=pixels)
        ref_txt = model.net.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
        )
    ref_img = getattr(ref_img, "pooler_output", ref_img)
    ref_txt = getattr(ref_txt, "pooler_output", ref_txt)
    torch.testing.assert_close(model.encode_image(pixels), torch.nn.functional.normalize(ref_img, dim=-1))
    torch.testing.assert_close(model.encode_text(TEXTS), torch.nn.functional.normalize(ref_txt, dim=-1))


def test_siglip_has_logit_bias_and_max_length_padding(tiny_hf_siglip_dir):
    model = mcip.load_model(f"hf:{tiny_hf_siglip_dir}")
    assert model.has_logit_bias()
    assert model.tokenize(["a dog"])["input_ids"].shape[1] == 16
    assert model.part_of("text_model.head.weight") == "text_projector"
    assert model.part_of("vision_model.head.probe") == "image_encoder"


def test_clip_parts(tiny_hf_clip_dir):
    model = mcip.load_model(f"hf:{tiny_hf_clip_dir}")
    assert not model.has_logit_bias()
    assert model.part_of("visual_projection.weight") == "image_projector"
    assert model.text_block_prefixes()[-1] == "text_model.encoder.layers.2"


def test_missing_directory():
    with pytest.raises(mcip.ModelLoadError, match="not found"):
        mcip.load_model("hf:./no/such/model")


def test_unsupported_model_type(tiny_text_tower_dir):
    with pytest.raises(mcip.ConfigError, match="composed"):
        mcip.load_model(f"hf:{tiny_text_tower_dir}")
