"""OpenAI's weights run QuickGELU (``x * sigmoid(1.702 x)``), which open_clip turns on from the pretrained
tag, not from the architecture's config. A model made from such a tag keeps it when saved and reloaded, a
state-dict file over an architecture whose tags all use it (the released ``MCIP-ViT-L-14-336.pth``:
``ViT-L-14-336`` has only ``openai``) loads with it, and a folder saved before the activation was
recorded takes it from the spec it was made from. References are open_clip's own models."""

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


def test_a_folder_saved_without_the_activation_takes_it_from_its_spec(
    state, tiny_openclip, tmp_path, monkeypatch
):
    _fake_tags(monkeypatch, tiny_openclip, {"openai": {"quick_gelu": True}})
    model = mcip.load_model(f"openclip:{tiny_openclip}/{_write(state, tmp_path / 'ft.pth', 'plain')}")
    mcip.save_model(model, tmp_path / "old")
    meta_path = tmp_path / "old" / "mcip_model.json"
    meta = json.loads(meta_path.read_text())
    del meta["build"]["quick_gelu"]  # as saved before the activation was recorded
    meta["spec"] = f"openclip:{tiny_openclip}/openai"
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="QuickGELU"):
        again = mcip.load_model(str(tmp_path / "old"))
    assert uses_quick_gelu(again.net)
    meta["spec"] = f"openclip:{tiny_openclip}"  # random weights: no tag, no QuickGELU
    meta_path.write_text(json.dumps(meta))
    assert not uses_quick_gelu(mcip.load_model(str(tmp_path / "old")).net)
