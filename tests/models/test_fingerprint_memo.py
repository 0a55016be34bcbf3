"""Fingerprints computed once where the weights hold still, and recorded with a saved model: the values
never change (an index records them), only how often the weights are hashed."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

import mcip
from mcip.models import fingerprint as FP
from mcip.models.checkpoint import META_FILE, WEIGHTS_FILE


def _model(model_specs, backend="composed"):
    kwargs = dict(model_specs[backend])
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


def _reference_image_fingerprint(model) -> str:
    """The documented digest, written out: blake2b-8 of the JSON head, then name|dtype|shape and the
    bytes of every state-dict tensor of the image tower and projector, by name."""
    h = hashlib.blake2b(digest_size=8)
    head = {
        "backend": model.backend,
        "image_config": model.image_config.to_dict(),
        "modifications": model.modifications,
        "parts": ["image_encoder", "image_projector"],
        **model.computation(),
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for name, t in sorted(model.net.state_dict().items()):
        if model.part_of(name) in ("image_encoder", "image_projector"):
            flat = t.detach().contiguous().reshape(-1)
            h.update(f"{name}|{flat.dtype}|{tuple(t.shape)}".encode())
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _counting(monkeypatch, name):
    calls = []
    real = getattr(FP, name)

    def counted(*args, **kwargs):
        calls.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(FP, name, counted)
    return calls


def test_values_are_the_documented_digest(model_specs):
    model = _model(model_specs)
    expected = _reference_image_fingerprint(model)
    assert FP.model_fingerprint(model, FP.IMAGE_PARTS) == expected
    with FP.fingerprints_held(model):
        assert FP.model_fingerprint(model, FP.IMAGE_PARTS) == expected


def test_held_weights_are_hashed_once_per_fingerprint(model_specs, monkeypatch):
    model = _model(model_specs)
    image = _counting(monkeypatch, "_model_fingerprint")
    text = _counting(monkeypatch, "_hash_tensors")
    with FP.fingerprints_held(model):
        first = [FP.model_fingerprint(model, FP.IMAGE_PARTS), FP.text_tower_fingerprint(model)]
        with FP.fingerprints_held(model):  # a nested block shares the memo
            again = [FP.model_fingerprint(model, FP.IMAGE_PARTS), FP.text_tower_fingerprint(model)]
        again += [FP.model_fingerprint(model, reversed(FP.IMAGE_PARTS)), FP.text_tower_fingerprint(model)]
    assert again == first * 2 and len(image) == 1 and len(text) == 1
    FP.model_fingerprint(model, FP.IMAGE_PARTS)  # outside the block: hashed again (weights may move)
    assert len(image) == 2
    assert "_mcip_fingerprints" not in model.__dict__


def test_a_saved_model_brings_its_fingerprints(model_specs, tmp_path, monkeypatch):
    """Loaded from its folder, a model's recorded fingerprints equal freshly hashed ones, and inside a
    held block nothing is hashed."""
    path = mcip.save_model(_model(model_specs), tmp_path / "m")
    model = mcip.load_model(str(path))
    saved = FP.saved_fingerprints(model)
    assert set(saved) == {
        "model:image_encoder,image_projector",
        "model:image_encoder",
        "text-tower",
        "lower:1",
    }
    fresh = {
        "model:image_encoder,image_projector": FP.model_fingerprint(model, FP.IMAGE_PARTS),
        "model:image_encoder": FP.model_fingerprint(model, ["image_encoder"]),
        "text-tower": FP.text_tower_fingerprint(model),
        "lower:1": FP.lower_blocks_fingerprint(model, 1),
    }
    assert saved == fresh

    def no_hashing(*a, **k):
        raise AssertionError("hashed the weights")

    monkeypatch.setattr(FP, "_model_fingerprint", no_hashing)
    monkeypatch.setattr(FP, "_hash_tensors", no_hashing)
    with FP.fingerprints_held(model, FP.saved_fingerprints(model)):
        assert FP.text_tower_fingerprint(model) == fresh["text-tower"]
        assert (
            FP.model_fingerprint(model, ["image_projector", "image_encoder"])
            == fresh["model:image_encoder,image_projector"]
        )


def test_recorded_fingerprints_are_dropped_when_the_weights_move(model_specs, tmp_path):
    path = mcip.save_model(_model(model_specs), tmp_path / "m")
    model = mcip.load_model(str(path))
    assert FP.saved_fingerprints(model) is not None
    with torch.no_grad():  # an in-place update (an optimiser step does the same)
        next(model.net.parameters()).add_(1.0)
    assert FP.saved_fingerprints(model) is None

    model = mcip.load_model(str(path))
    model.net.load_state_dict(model.net.state_dict())  # copies in place: versions move
    assert FP.saved_fingerprints(model) is None

    assert FP.saved_fingerprints(mcip.load_model(str(path), precision="bf16")) is None
    assert FP.saved_fingerprints(mcip.load_model(str(path), drop_projector=True)) is None


def test_a_replaced_weights_file_or_an_old_folder_hashes_again(model_specs, tmp_path):
    path = mcip.save_model(_model(model_specs), tmp_path / "m")
    weights = path / WEIGHTS_FILE
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # another file, as far as we know
    assert FP.saved_fingerprints(mcip.load_model(str(path))) is None

    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert FP.saved_fingerprints(mcip.load_model(str(path))) is not None
    meta = json.loads((path / META_FILE).read_text())
    del meta["fingerprints"]  # a folder written before fingerprints were recorded
    (path / META_FILE).write_text(json.dumps(meta))
    old = mcip.load_model(str(path))
    assert FP.saved_fingerprints(old) is None
    assert FP.model_fingerprint(old, FP.IMAGE_PARTS) == _reference_image_fingerprint(old)


@pytest.mark.parametrize("damaged", [{"weights": "x"}, {"values": {"text-tower": 3}}, "nonsense"])
def test_a_damaged_record_is_ignored(model_specs, tmp_path, damaged):
    path = mcip.save_model(_model(model_specs), tmp_path / "m")
    meta = json.loads((path / META_FILE).read_text())
    meta["fingerprints"] = damaged if not isinstance(damaged, dict) else meta["fingerprints"] | damaged
    (path / META_FILE).write_text(json.dumps(meta))
    model = mcip.load_model(str(path))
    assert FP.saved_fingerprints(model) is None
