"""Contract tests: every backend honours the EmbeddingModel protocol the same way."""

from __future__ import annotations

import pytest
import torch

import mcip
from mcip.models import PARTS, set_trainable_parts, unlock_last_text_blocks
from tests.conftest import random_images

TEXTS = ["a photo of a dog", "a red car", "two small birds in a tree"]


def test_encoders_return_normalised_joint_embeddings(tiny_model):
    img = tiny_model.encode_image(random_images(2, tiny_model.image_size))
    txt = tiny_model.encode_text(TEXTS)
    assert img.shape == (2, tiny_model.embed_dim)
    assert txt.shape == (3, tiny_model.embed_dim)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))


def test_pil_images_go_through_eval_transform(tiny_model):
    from PIL import Image

    pil = [Image.new("RGB", (50, 40), (200, 30, 30)), Image.new("L", (20, 30), 128)]
    emb = tiny_model.encode_image(pil)
    assert emb.shape == (2, tiny_model.embed_dim)
    x = tiny_model.eval_transform(pil[0])
    assert tuple(x.shape) == (3, tiny_model.image_size, tiny_model.image_size)
    assert tuple(tiny_model.train_transform(pil[1]).shape) == (
        3,
        tiny_model.image_size,
        tiny_model.image_size,
    )


def test_every_parameter_has_exactly_one_part(tiny_model):
    names = [n for n, _ in tiny_model.net.named_parameters()]
    parts = [tiny_model.part_of(n) for n in names]
    assert set(parts) <= set(PARTS)
    sizes = tiny_model.part_sizes()
    assert sum(sizes.values()) == sum(p.numel() for p in tiny_model.net.parameters())
    for part in ("image_encoder", "text_encoder", "text_projector", "logit_scale"):
        assert sizes[part] > 0, part
    assert (sizes["logit_bias"] > 0) == (tiny_model.logit_bias is not None)


def test_named_part_attributes_exist(tiny_model):
    for attr in (
        "image_encoder",
        "image_projector",
        "text_encoder",
        "text_projector",
        "logit_scale",
        "logit_bias",
    ):
        getattr(tiny_model, attr)
    assert isinstance(tiny_model.logit_scale, torch.nn.Parameter)


def test_set_trainable_parts(tiny_model):
    set_trainable_parts(tiny_model, ["image_encoder", "image_projector"])
    for name, p in tiny_model.net.named_parameters():
        assert p.requires_grad == (tiny_model.part_of(name) in {"image_encoder", "image_projector"})
    with pytest.raises(mcip.ConfigError, match="Valid parts"):
        set_trainable_parts(tiny_model, ["vision"])


def test_unlock_last_text_blocks(tiny_model):
    blocks = tiny_model.text_block_prefixes()
    assert len(blocks) >= 2
    trainable = set(unlock_last_text_blocks(tiny_model, 1))
    last = blocks[-1]
    norms = tiny_model.text_final_norm_prefixes()
    for name, p in tiny_model.net.named_parameters():
        part = tiny_model.part_of(name)
        expected = (
            name.startswith(last + ".")
            or any(name.startswith(n + ".") for n in norms)
            or part in ("text_projector", "logit_scale", "logit_bias")
        )
        assert p.requires_grad == expected, name
        assert (name in trainable) == expected
    assert any(n.startswith(last + ".") for n in trainable)
    assert not any(n.startswith(blocks[0] + ".") for n in trainable)
    with pytest.raises(mcip.ConfigError, match="blocks"):
        unlock_last_text_blocks(tiny_model, len(blocks) + 1)


def test_gradients_reach_only_trainable_parts(tiny_model):
    unlock_last_text_blocks(tiny_model, 1)
    tiny_model.train()
    loss = tiny_model.encode_text(TEXTS).sum() + tiny_model.logit_scale.sum()
    loss.backward()
    for name, p in tiny_model.net.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
    assert tiny_model.text_projector is not None


def test_grad_checkpointing_gives_same_gradients(tiny_model):
    """Both passes in train mode with the same seed: dropout masks are replayed during recomputation."""
    tiny_model.train()
    pixels = random_images(2, tiny_model.image_size)

    def grads():
        tiny_model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        (tiny_model.encode_image(pixels).sum() + tiny_model.encode_text(TEXTS).sum()).backward()
        return {n: p.grad.clone() for n, p in tiny_model.net.named_parameters() if p.grad is not None}

    reference = grads()
    tiny_model.set_grad_checkpointing(True)
    checkpointed = grads()
    tiny_model.set_grad_checkpointing(False)
    assert reference.keys() == checkpointed.keys()
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], rtol=1e-4, atol=1e-5, msg=name)


def test_save_and_reload_gives_identical_embeddings(tiny_model, tmp_path):
    pixels = random_images(2, tiny_model.image_size)
    before_img = tiny_model.encode_image(pixels)
    before_txt = tiny_model.encode_text(TEXTS)
    path = mcip.save_model(tiny_model, tmp_path / "model")
    again = mcip.load_model(path)
    assert type(again) is type(tiny_model)
    assert again.embed_dim == tiny_model.embed_dim
    assert again.image_config == tiny_model.image_config
    torch.testing.assert_close(again.encode_image(pixels), before_img)
    torch.testing.assert_close(again.encode_text(TEXTS), before_txt)
    assert again.text_block_prefixes() == tiny_model.text_block_prefixes()


def test_save_overwrites_atomically(tiny_model, tmp_path):
    path = tmp_path / "model"
    mcip.save_model(tiny_model, path)
    with torch.no_grad():
        tiny_model.logit_scale.add_(1.0)
    mcip.save_model(tiny_model, path)
    again = mcip.load_model(path)
    torch.testing.assert_close(again.logit_scale, tiny_model.logit_scale)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary leftovers


def test_drop_projector_and_new_text_projector_survive_reload(tiny_model, tmp_path):
    if tiny_model.image_projector is None:
        with pytest.raises(mcip.ConfigError, match="no image projector"):
            tiny_model.drop_image_projector()
        return
    pixels = random_images(2, tiny_model.image_size)
    features = tiny_model.image_features(pixels)
    tiny_model.drop_image_projector()
    width = features.shape[-1]
    assert tiny_model.embed_dim == width
    torch.testing.assert_close(
        tiny_model.encode_image(pixels), torch.nn.functional.normalize(features, dim=-1)
    )
    text_width = tiny_model.text_features(tiny_model.tokenize(TEXTS)).shape[-1]
    weight = torch.randn(text_width, width)
    tiny_model.replace_text_projector(width, weight)
    assert tiny_model.encode_text(TEXTS).shape == (3, width)
    expected = torch.nn.functional.normalize(
        tiny_model.text_features(tiny_model.tokenize(TEXTS)) @ weight, dim=-1
    )
    torch.testing.assert_close(tiny_model.encode_text(TEXTS), expected, rtol=1e-4, atol=1e-5)
    again = mcip.load_model(mcip.save_model(tiny_model, tmp_path / "m"))
    assert again.embed_dim == width
    torch.testing.assert_close(again.encode_text(TEXTS), tiny_model.encode_text(TEXTS))
    torch.testing.assert_close(again.encode_image(pixels), tiny_model.encode_image(pixels))
    with pytest.raises(mcip.ConfigError, match="weight must be"):
        tiny_model.replace_text_projector(width, torch.randn(width + 1, width))


def test_load_model_drop_projector_flag(model_specs):
    kwargs = dict(model_specs["openclip"])
    model = mcip.load_model(kwargs.pop("spec"), drop_projector=True, **kwargs)
    assert model.embed_dim == 32  # the tiny ViT width, not the 16-d joint space
    assert model.part_sizes()["image_projector"] == 0


def test_bad_image_tensor_shape(tiny_model):
    with pytest.raises(mcip.InputError, match=r"\(B, 3, H, W\)"):
        tiny_model.encode_image(torch.zeros(3, 8, 8))
    with pytest.raises(mcip.InputError, match="single string"):
        tiny_model.encode_text("a dog")


def test_forward_returns_both_towers_and_scales(tiny_model):
    pixels = random_images(2, tiny_model.image_size)
    tokens = tiny_model.tokenize(TEXTS)
    out = tiny_model(pixels=pixels, tokens=tokens)
    torch.testing.assert_close(out["image"], tiny_model.encode_image(pixels))
    torch.testing.assert_close(out["text"], tiny_model.encode_text(tokens))
    assert out["logit_scale"] is tiny_model.logit_scale
    assert ("logit_bias" in out) == tiny_model.has_logit_bias()
    assert set(tiny_model(pixels=pixels)) >= {"image"} and "text" not in tiny_model(pixels=pixels)


def test_fingerprint_tracks_the_parts_that_change(tiny_model):
    from mcip.models import IMAGE_PARTS, model_fingerprint, unlock_last_text_blocks

    whole, image = model_fingerprint(tiny_model), model_fingerprint(tiny_model, IMAGE_PARTS)
    assert whole == model_fingerprint(tiny_model) and len(whole) == 16
    unlock_last_text_blocks(tiny_model, 1)
    with torch.no_grad():
        for p in tiny_model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    assert model_fingerprint(tiny_model, IMAGE_PARTS) == image  # text-side training keeps image caches valid
    assert model_fingerprint(tiny_model) != whole
    with torch.no_grad():
        next(iter(tiny_model.named_part_parameters("image_encoder").values())).add_(0.01)
    assert model_fingerprint(tiny_model, IMAGE_PARTS) != image


@pytest.mark.parametrize("which", ["none", "one", "all"])
def test_text_features_from_cached_hidden_states_equal_the_full_tower(tiny_model, which):
    """Re-A's split (mcip.models.text_split): the lower blocks' states, then the last n blocks + final
    norm + pooling, equal text_features; also after trimming each row to text_hidden_lengths and
    re-padding the batch with zeros (what the cache stores and rebuilds)."""
    n = {"none": 0, "one": 1, "all": len(tiny_model.text_block_prefixes())}[which]
    tokens = tiny_model.tokenize([*TEXTS, "a"])
    with torch.no_grad():
        reference = tiny_model.text_features(tokens)
        hidden = tiny_model.text_hidden_below(tokens, n)
        torch.testing.assert_close(tiny_model.text_features_from_hidden(hidden, tokens, n), reference)
        lengths = tiny_model.text_hidden_lengths(tokens)
        assert lengths.shape == (4,) and int(lengths.min()) >= 1 and int(lengths.max()) <= hidden.shape[1]
        keep = torch.arange(int(lengths.max())) < lengths[:, None]  # (B, L') stored positions
        width = int(lengths.max())
        trimmed = hidden[:, :width] * keep[..., None]
        padded = {k: v[:, :width] * keep for k, v in tokens.items()}
        torch.testing.assert_close(tiny_model.text_features_from_hidden(trimmed, padded, n), reference)
    assert hidden.shape[:2] == tokens["input_ids"].shape
    with pytest.raises(mcip.ConfigError, match="n_last"):
        tiny_model.text_hidden_below(tokens, len(tiny_model.text_block_prefixes()) + 1)


def test_text_split_keeps_gradients_and_checkpointing(tiny_model):
    """Gradients of the unlocked blocks through the split equal those through the full tower, with
    activation checkpointing on as well."""
    unlock_last_text_blocks(tiny_model, 1)
    tokens = tiny_model.tokenize(TEXTS)
    with torch.no_grad():
        hidden = tiny_model.text_hidden_below(tokens, 1)

    def grads(split: bool):
        tiny_model.zero_grad(set_to_none=True)
        feats = tiny_model.text_features_from_hidden(hidden, tokens, 1) if split else None
        feats = tiny_model.text_features(tokens) if feats is None else feats
        tiny_model.project_text(feats).square().sum().backward()
        return {n: p.grad.clone() for n, p in tiny_model.net.named_parameters() if p.grad is not None}

    reference = grads(split=False)
    tiny_model.set_grad_checkpointing(True)
    tiny_model.train()  # transformers checkpoints only in train mode; dropout off to compare exactly
    for module in tiny_model.net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    split = grads(split=True)
    tiny_model.set_grad_checkpointing(False)
    assert split.keys() == reference.keys() and split
    for name in reference:
        torch.testing.assert_close(split[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_reload_skips_random_init_and_restores_every_tensor(tiny_model, tmp_path):
    """A load builds the architecture without torch.nn.init's random fills and ends with every parameter
    and buffer, non-persistent ones included, equal to the saved model's."""
    import torch.nn.init as init

    from mcip.models import checkpoint
    from mcip.models.checkpoint import RANDOM_FILLERS

    path = mcip.save_model(tiny_model, tmp_path / "model")
    seen = []
    real_build = checkpoint.random_init_skipped

    def spying():
        ctx = real_build()

        class Spy:
            def __enter__(self):
                ctx.__enter__()
                t = torch.full((4,), 3.0)
                seen.append(torch.equal(init.kaiming_normal_(t.view(2, 2)).view(-1), torch.zeros(4)))

            def __exit__(self, *exc):
                return ctx.__exit__(*exc)

        return Spy()

    checkpoint.random_init_skipped = spying
    try:
        again = mcip.load_model(path, random_init=False)
    finally:
        checkpoint.random_init_skipped = real_build
    assert seen == [True]  # inside the build, a random fill writes zeros
    assert not any(name in torch.Tensor.__dict__ for name in RANDOM_FILLERS)  # put back
    assert init.normal_(torch.zeros(1000)).std() > 0.5
    before = dict(tiny_model.net.named_parameters()) | dict(tiny_model.net.named_buffers())
    after = dict(again.net.named_parameters()) | dict(again.net.named_buffers())
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name


def test_an_evaluation_load_leaves_torchs_generator_alone(tiny_model, tmp_path):
    """``random_init=False`` (evaluation) draws nothing; the default load draws what the architecture's
    initialisation draws, as before, so a seeded stage that loads its start then draws its loss head
    reproduces its earlier runs."""
    path = mcip.save_model(tiny_model, tmp_path / "model")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    mcip.load_model(path, random_init=False)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(7)
    mcip.load_model(path)
    assert not torch.equal(torch.rand(3), expected)


def test_a_failed_load_puts_the_init_functions_back(tiny_model, tmp_path):
    import torch.nn.init as init

    from mcip.models.checkpoint import RANDOM_FILLERS

    path = mcip.save_model(tiny_model, tmp_path / "model")
    (path / "model.safetensors").unlink()
    with pytest.raises(mcip.ModelLoadError, match="missing"):
        mcip.load_model(path, random_init=False)
    assert not any(name in torch.Tensor.__dict__ for name in RANDOM_FILLERS)
    assert init.uniform_(torch.zeros(1000)).std() > 0.2


LEAK_PROBE = """
import sys, torch, mcip
mcip.load_model(sys.argv[1], random_init=False)  # transformers and timm are imported during this load
import transformers.initialization as hf_init
assert hf_init.TORCH_INIT_FUNCTIONS["normal_"] is torch.nn.init.normal_
assert hf_init.normal_(torch.zeros(2000)).std() > 0.5  # a later Hugging Face init draws again
assert torch.nn.Linear(64, 64).weight.abs().sum() > 0
print("ok")
"""


def test_a_first_load_that_imports_the_backends_leaves_no_patched_init(model_specs, tmp_path):
    """In a fresh interpreter the backends' libraries are imported inside the build: the ones that keep
    references to torch's init functions (transformers) keep the real functions."""
    import subprocess
    import sys

    kwargs = dict(model_specs["composed"])
    path = mcip.save_model(mcip.load_model(kwargs.pop("spec"), **kwargs), tmp_path / "model")
    out = subprocess.run(
        [sys.executable, "-c", LEAK_PROBE, str(path)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
