"""``freeze_image_groups``: the image encoder's groups (stem, then blocks) per backend, written by hand;
freezing the first N leaves the other parameters' gradients exactly those of the full backward."""

from __future__ import annotations

import pytest
import torch

import mcip
from mcip.errors import ConfigError
from mcip.models import freeze_image_groups, set_trainable_parts
from tests.conftest import random_images

# Per backend: the groups as parameter-name prefixes, input side first (read off each library's module
# layout: open_clip's VisionTransformer, transformers' CLIP/SigLIP vision model, timm's EfficientNet).
EXPECTED = {
    "openclip": [
        ["visual.class_embedding", "visual.positional_embedding", "visual.conv1.", "visual.ln_pre."],
        ["visual.transformer.resblocks.0."],
        ["visual.transformer.resblocks.1.", "visual.ln_post."],
    ],
    "hf-clip": [
        ["vision_model.embeddings.", "vision_model.pre_layrnorm."],
        ["vision_model.encoder.layers.0."],
        ["vision_model.encoder.layers.1.", "vision_model.post_layernorm."],
    ],
    "hf-siglip": [
        ["vision_model.embeddings."],
        ["vision_model.encoder.layers.0."],
        ["vision_model.encoder.layers.1.", "vision_model.post_layernorm.", "vision_model.head."],
    ],
    "composed": [
        ["visual.conv_stem.", "visual.bn1."],
        *[[f"visual.blocks.{i}."] for i in range(4)],
        ["visual.blocks.4.", "visual.conv_head.", "visual.bn2."],
    ],
}


def _load(model_specs, name):
    torch.manual_seed(0)
    kwargs = dict(model_specs[name])
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


def _named(model, prefixes):
    return {n for n, _ in model.net.named_parameters() if any(n.startswith(p) for p in prefixes)}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_groups_match_the_module_layout(name, model_specs):
    model = _load(model_specs, name)
    groups = model.image_groups()
    expected = [_named(model, prefixes) for prefixes in EXPECTED[name]]
    assert [set(g) for g in groups] == expected
    assert all(expected)  # every hand-written prefix names parameters
    # the groups are the image encoder, whole and nothing else (the projector is not a group)
    encoder = {n for n, _ in model.net.named_parameters() if n.startswith(("visual.", "vision_model."))}
    projector = {"visual.proj"} if name == "openclip" else set()
    assert set().union(*expected) == encoder - projector


@pytest.mark.parametrize("name", ["composed", "openclip", "hf-siglip"])
def test_frozen_groups_get_no_gradient_and_the_rest_the_full_one(name, model_specs):
    model = _load(model_specs, name)
    model.train()
    pixels = random_images(4, model.image_config.size, seed=1)

    def grads(n):
        set_trainable_parts(model, ("image_encoder", "image_projector"))
        frozen = freeze_image_groups(model, n)
        model.net.zero_grad(set_to_none=True)
        emb = model.encode_image(pixels)
        (emb * torch.linspace(-1, 1, emb.shape[-1])).sum().backward()
        return set(frozen), {k: p.grad for k, p in model.net.named_parameters() if p.requires_grad}

    _, full = grads(0)
    frozen, part = grads(2)
    assert frozen == _named(model, [p for group in EXPECTED[name][:2] for p in group])
    assert set(part) == set(full) - frozen
    for k in part:
        torch.testing.assert_close(part[k], full[k], rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for k, p in model.net.named_parameters() if k in frozen)


def test_freeze_zero_changes_nothing_and_bad_counts_say_the_limit(model_specs):
    model = _load(model_specs, "composed")
    set_trainable_parts(model, ("image_encoder",))
    assert freeze_image_groups(model, 0) == []
    assert all(p.requires_grad for n, p in model.net.named_parameters() if n.startswith("visual."))
    with pytest.raises(ConfigError, match=r"has 6 .*use at most 5"):
        freeze_image_groups(model, 6)
    with pytest.raises(ConfigError, match=">= 0"):
        freeze_image_groups(model, -1)


def test_frozen_groups_keep_their_batchnorm_statistics(model_specs):
    """Without freeze_bn_stats, the BatchNorms of frozen groups stay in eval mode in train() (their running
    statistics fixed), those of trainable groups train."""
    model = _load(model_specs, "composed")
    model.freeze_bn_stats(False)
    set_trainable_parts(model, ("image_encoder", "image_projector"))
    freeze_image_groups(model, 2)
    model.train()
    bns = {n: m for n, m in model.net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    frozen = {n for n in bns if n.startswith(("visual.bn1", "visual.blocks.0."))}
    assert frozen and {n for n, m in bns.items() if not m.training} == frozen
    before = {n: bns[n].running_mean.clone() for n in bns}
    model.encode_image(random_images(4, model.image_config.size, seed=2))
    moved = {n for n in bns if not torch.equal(before[n], bns[n].running_mean)}
    assert moved == set(bns) - frozen
