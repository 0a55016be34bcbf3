"""Named models: the preset registry that load_model consults before the backend."""

from __future__ import annotations

import pytest

import mcip
from mcip.models.presets import PRESETS, Preset


def test_presets_listed_with_descriptions():
    presets = mcip.list_presets()
    assert list(presets) == sorted(presets) and "composed:lab" in presets
    assert all(isinstance(d, str) and d for d in presets.values())


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_names_a_backend(name):
    prefix, _, rest = name.partition(":")
    assert prefix in mcip.list_backends() and rest


def test_load_model_builds_a_registered_preset(monkeypatch, model_specs):
    tiny = dict(model_specs["composed"])
    calls = []

    def build(spec, **kwargs):
        calls.append((spec, kwargs))
        return mcip.load_model(tiny.pop("spec"), **tiny)

    monkeypatch.setitem(PRESETS._items, "composed:tiny-preset", Preset(build, "a tiny test model"))
    model = mcip.load_model("composed:tiny-preset", seed=3)
    assert calls == [("composed:tiny-preset", {"seed": 3})]
    assert model.embed_dim == 16 and not model.training
    assert mcip.list_presets()["composed:tiny-preset"] == "a tiny test model"
