"""The authors' released checkpoints are plain open_clip state dicts (SPEC section 7):
``MCIP-ViT-L-14-336.pth`` (open_clip ``ViT-L-14-336``, tag ``openai``) and
``MCIP-ViT-SO400M-14-SigLIP-384.pth`` (``ViT-SO400M-14-SigLIP-384``, tag ``webli``). mcip loads such a file
through the spec ``openclip:ARCH/PATH`` strictly, as ``.pth`` or ``.pt``, plain, wrapped in
``{"state_dict": ...}`` or with DDP's ``module.`` prefix. A tiny registered architecture stands in for the
multi-GB files; ``MCIP_RELEASED_CHECKPOINT=/path/to/one/of/them`` also loads the real one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import mcip

RELEASED = {
    "MCIP-ViT-L-14-336.pth": ("ViT-L-14-336", "openai"),
    "MCIP-ViT-SO400M-14-SigLIP-384.pth": ("ViT-SO400M-14-SigLIP-384", "webli"),
}


@pytest.fixture(scope="module")
def saved(tiny_openclip):
    """A tiny open_clip model's state dict (random weights, fixed seed), as open_clip returns it."""
    import open_clip

    torch.manual_seed(7)
    net = open_clip.create_model(tiny_openclip)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _write(state: dict, path: Path, form: str) -> Path:
    if form == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": state} if form in ("wrapped", "module") else state, path)
    return path


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
@pytest.mark.parametrize("form", ["plain", "wrapped", "module"])
def test_each_form_loads_the_saved_weights_exactly(saved, tiny_openclip, tmp_path, suffix, form):
    path = _write(saved, tmp_path / f"MCIP-tiny{suffix}", form)
    torch.manual_seed(12345)  # another random init: equality below proves the file's weights were loaded
    loaded = mcip.load_model(f"openclip:{tiny_openclip}/{path}").net.state_dict()
    assert sorted(loaded) == sorted(saved)
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_a_missing_key_fails_with_the_key_and_the_fix(saved, tiny_openclip, tmp_path, suffix):
    state = dict(saved)
    del state["text_projection"]
    path = _write(state, tmp_path / f"missing{suffix}", "plain")
    with pytest.raises(mcip.ModelLoadError, match="does not match this architecture") as info:
        mcip.load_model(f"openclip:{tiny_openclip}/{path}")
    message = str(info.value)
    assert "Missing key" in message and "text_projection" in message
    assert "openclip:ViT-SO400M-14-SigLIP-384/" in message and "openclip:ViT-L-14-336/" in message


@pytest.mark.parametrize("form", ["plain", "wrapped"])
def test_an_extra_key_fails_with_the_key(saved, tiny_openclip, tmp_path, form):
    state = {**saved, "head.extra.weight": torch.zeros(3)}
    path = _write(state, tmp_path / "extra.pth", form)
    with pytest.raises(mcip.ModelLoadError, match="does not match this architecture") as info:
        mcip.load_model(f"openclip:{tiny_openclip}/{path}")
    assert "Unexpected key" in str(info.value) and "head.extra.weight" in str(info.value)


def _fake_tags(monkeypatch, arch: str, cfgs: dict[str, dict]) -> None:
    import open_clip

    real_tags, real_cfg = open_clip.list_pretrained_tags_by_model, open_clip.get_pretrained_cfg
    monkeypatch.setattr(
        open_clip,
        "list_pretrained_tags_by_model",
        lambda name: list(cfgs) if name == arch else real_tags(name),
    )
    monkeypatch.setattr(
        open_clip,
        "get_pretrained_cfg",
        lambda name, tag: cfgs.get(tag, {}) if name == arch else real_cfg(name, tag),
    )


def test_a_file_takes_the_normalisation_of_the_architectures_tag(saved, tiny_openclip, tmp_path, monkeypatch):
    """As with the authors' recipe (create the model with its tag, load the file over it): a SigLIP
    fine-tune is normalised with webli's mean and std 0.5, not open_clip's untagged (OpenAI) default."""
    _fake_tags(monkeypatch, tiny_openclip, {"webli": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}})
    path = _write(saved, tmp_path / "siglip-like.pth", "plain")
    model = mcip.load_model(f"openclip:{tiny_openclip}/{path}")
    assert model.image_config.mean == (0.5, 0.5, 0.5) and model.image_config.std == (0.5, 0.5, 0.5)


def test_tags_that_disagree_leave_the_default_normalisation(saved, tiny_openclip, tmp_path, monkeypatch):
    _fake_tags(
        monkeypatch,
        tiny_openclip,
        {"a": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}, "b": {"mean": (0.1, 0.2, 0.3)}},
    )
    path = _write(saved, tmp_path / "mixed.pth", "plain")
    model = mcip.load_model(f"openclip:{tiny_openclip}/{path}")
    assert model.image_config.mean == (0.48145466, 0.4578275, 0.40821073)  # OpenAI's, open_clip's default
    assert model.image_config.std == (0.26862954, 0.26130258, 0.27577711)


def test_the_released_architectures_and_tags_exist_in_open_clip():
    """The names the docs give for the two files are open_clip's (no download: names and tags only)."""
    import open_clip

    for arch, tag in RELEASED.values():
        assert arch in open_clip.list_models()
        assert tag in open_clip.list_pretrained_tags_by_model(arch)


@pytest.mark.skipif(
    Path(os.environ.get("MCIP_RELEASED_CHECKPOINT", "")).name not in RELEASED,
    reason="set MCIP_RELEASED_CHECKPOINT=/path/to/MCIP-ViT-L-14-336.pth or MCIP-ViT-SO400M-14-SigLIP-384.pth",
)
def test_a_released_checkpoint_loads():  # pragma: no cover - needs the multi-GB file
    path = Path(os.environ["MCIP_RELEASED_CHECKPOINT"])
    arch, _ = RELEASED[path.name]
    model = mcip.load_model(f"openclip:{arch}/{path}")
    expected = {"ViT-L-14-336": (768, 336), "ViT-SO400M-14-SigLIP-384": (1152, 384)}[arch]
    assert (model.embed_dim, model.image_size) == expected
