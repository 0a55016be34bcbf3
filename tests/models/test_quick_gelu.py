"""OpenAI's weights were trained with QuickGELU (``x * sigmoid(1.702 x)``); open_clip's pretrained table says
so per tag (``quick_gelu``), but open_clip 3 only warns and builds GELU. mcip builds a tag or a state-dict
file over an architecture whose tags all use it (the released ``MCIP-ViT-L-14-336.pth``: ``ViT-L-14-336``
has only ``openai``) with QuickGELU, keeps it when saved and reloaded, gives such a model fingerprints of
its own, and reloads folders saved before the activation was recorded as they were built (GELU).
References are open_clip's own models."""

from __future__ import annotations

import json

import pytest
import torch

import mcip
from mcip.models.openclip_spec import shared_tag_quick_gelu, uses_quick_gelu
from tests.models.test_released_checkpoints import _fake_tags, _write


@pytest.fixture(scope="module")
def state(tiny_openclip):
    import open_clip

    torch.manual_seed(11)
    net = open_clip.create_model(tiny_openclip)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _reference(arch: str, state: dict, quick_gelu: bool):
    """open_clip's own model with ``state`` loaded, in eval mode."""
    import open_clip

    net = open_clip.create_model(arch, force_quick_gelu=quick_gelu)
    net.load_state_dict(state)
    return net.eval()


def _images(size: int = 32) -> torch.Tensor:
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(5))


def test_open_clips_tags_say_which_architectures_run_quick_gelu():
    """Facts of open_clip's pretrained table (no download): OpenAI's weights are QuickGELU."""
    assert shared_tag_quick_gelu("ViT-L-14-336")  # only 'openai': the released ViT-L file's architecture
    assert not shared_tag_quick_gelu("ViT-SO400M-14-SigLIP-384")  # webli
    assert not shared_tag_quick_gelu("ViT-B-32")  # openai and LAION tags disagree: open_clip's GELU


def test_a_file_over_quick_gelu_tags_runs_quick_gelu(state, tiny_openclip, tmp_path, monkeypatch):
    _fake_tags(monkeypatch, tiny_openclip, {"openai": {"quick_gelu": True}})
    model = mcip.load_model(f"openclip:{tiny_openclip}/{_write(state, tmp_path / 'ft.pth', 'plain')}")
    assert uses_quick_gelu(model.net)
    with torch.no_grad():
        want = torch.nn.functional.normalize(_reference(tiny_openclip, state, True).encode_image(_images()))
        torch.testing.assert_close(model.encode_image(_images()), want, atol=1e-6, rtol=0)
        gelu = torch.nn.functional.normalize(_reference(tiny_openclip, state, False).encode_image(_images()))
    assert (model.encode_image(_images()) - gelu).abs().max() > 1e-3  # the activation matters here


def test_a_file_over_tags_that_disagree_runs_gelu(state, tiny_openclip, tmp_path, monkeypatch):
    _fake_tags(monkeypatch, tiny_openclip, {"openai": {"quick_gelu": True}, "laion": {}})
    model = mcip.load_model(f"openclip:{tiny_openclip}/{_write(state, tmp_path / 'ft.pth', 'plain')}")
    assert not uses_quick_gelu(model.net)


def test_quick_gelu_survives_save_and_reload(state, tiny_openclip, tmp_path, monkeypatch):
    _fake_tags(monkeypatch, tiny_openclip, {"openai": {"quick_gelu": True}})
    model = mcip.load_model(f"openclip:{tiny_openclip}/{_write(state, tmp_path / 'ft.pth', 'plain')}")
    mcip.save_model(model, tmp_path / "saved")
    monkeypatch.undo()  # the reload must not depend on the tags
    again = mcip.load_model(str(tmp_path / "saved"))
    assert uses_quick_gelu(again.net)
    with torch.no_grad():
        torch.testing.assert_close(
            again.encode_image(_images()), model.encode_image(_images()), atol=1e-6, rtol=0
        )


def test_a_tag_trained_with_quick_gelu_runs_it(state, tiny_openclip, tmp_path, monkeypatch):
    """open_clip would download the tag's weights; the stand-in builds the same network without them."""
    import open_clip

    _fake_tags(monkeypatch, tiny_openclip, {"openai": {"quick_gelu": True}, "laion": {}})
    real = open_clip.create_model
    monkeypatch.setattr(open_clip, "create_model", lambda arch, pretrained=None, **kw: real(arch, **kw))
    assert uses_quick_gelu(mcip.load_model(f"openclip:{tiny_openclip}/openai").net)
    assert not uses_quick_gelu(mcip.load_model(f"openclip:{tiny_openclip}/laion").net)


def test_a_folder_saved_without_the_activation_reloads_as_built(state, tiny_openclip, tmp_path, monkeypatch):
    """Before the activation was recorded every open_clip model was built with GELU (open_clip 3 does not
    turn it on from a tag): such a folder reloads with GELU whatever its spec names."""
    model = mcip.load_model(f"openclip:{tiny_openclip}/{_write(state, tmp_path / 'ft.pth', 'plain')}")
    mcip.save_model(model, tmp_path / "old")
    meta_path = tmp_path / "old" / "mcip_model.json"
    meta = json.loads(meta_path.read_text())
    del meta["build"]["quick_gelu"]
    meta["spec"] = f"openclip:{tiny_openclip}/openai"
    meta_path.write_text(json.dumps(meta))
    _fake_tags(monkeypatch, tiny_openclip, {"openai": {"quick_gelu": True}})
    again = mcip.load_model(str(tmp_path / "old"))
    assert not uses_quick_gelu(again.net)
    with torch.no_grad():
        torch.testing.assert_close(
            again.encode_image(_images()), model.encode_image(_images()), atol=1e-6, rtol=0
        )


def test_quick_gelu_has_fingerprints_of_its_own(state, tiny_openclip, tmp_path, monkeypatch):
    """The same weights run with QuickGELU and with GELU must not share caches or pass an index's check;
    a GELU model's fingerprint is what it was (nothing added to it)."""
    from mcip.models.fingerprint import IMAGE_PARTS, TEXT_PARTS, model_fingerprint

    path = _write(state, tmp_path / "ft.pth", "plain")
    gelu = mcip.load_model(f"openclip:{tiny_openclip}/{path}")
    _fake_tags(monkeypatch, tiny_openclip, {"openai": {"quick_gelu": True}})
    quick = mcip.load_model(f"openclip:{tiny_openclip}/{path}")
    assert gelu.computation() == {} and quick.computation() == {"activation": "quick_gelu"}
    for parts in (IMAGE_PARTS, TEXT_PARTS):
        assert model_fingerprint(gelu, parts) != model_fingerprint(quick, parts)


def test_an_architecture_whose_config_says_quick_gelu_keeps_its_fingerprint(tmp_path):
    """``ARCH-quickgelu`` configs imply the activation: nothing is added, so caches and indexes made with
    such models stay valid."""
    import open_clip

    cfg = json.loads(json.dumps(open_clip.get_model_config("RN50-quickgelu")))
    assert cfg.get("quick_gelu") is True  # open_clip's own -quickgelu configs carry it
    tiny = {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    (tmp_path / "TinyQuickTest-quickgelu.json").write_text(json.dumps(tiny))
    open_clip.add_model_config(tmp_path / "TinyQuickTest-quickgelu.json")
    model = mcip.load_model("openclip:TinyQuickTest-quickgelu")
    assert uses_quick_gelu(model.net) and model.computation() == {}
