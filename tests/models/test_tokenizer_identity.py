"""The tokenizer digest that lets a text cache be read without tokenising: equal for equal tokenizers,
different where a string would get other tokens, absent where the tokenizer is unknown or random."""

from __future__ import annotations

import pytest
import torch

import mcip
from mcip.models.tokenizer_identity import tokenizer_fingerprint, tokenizer_state

BACKENDS = ["openclip", "hf-clip", "hf-siglip", "composed"]


def _model(model_specs, backend):
    kwargs = dict(model_specs[backend])
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_loads_share_a_digest(model_specs, backend):
    a, b = _model(model_specs, backend), _model(model_specs, backend)
    assert a.__dict__.get("_mcip_tokenizer_fingerprint", ()) == ()  # not computed yet
    digest = tokenizer_fingerprint(a)
    assert isinstance(digest, str) and len(digest) == 16
    assert tokenizer_fingerprint(b) == digest
    assert a.__dict__["_mcip_tokenizer_fingerprint"] == digest  # computed once per model object


@pytest.mark.parametrize("backend", ["hf-clip", "composed"])
def test_another_vocabulary_is_another_digest(model_specs, backend):
    """A token added to a Hugging Face tokenizer changes what some strings map to: another digest."""
    model = _model(model_specs, backend)
    before = tokenizer_fingerprint(_model(model_specs, backend))
    model.tokenizer.add_tokens(["zzqqxx"])
    assert tokenizer_fingerprint(model) != before


def test_another_context_length_is_another_digest(model_specs):
    """open_clip pads and truncates to its context length: a shorter one gives other token rows."""
    model = _model(model_specs, "openclip")
    before = tokenizer_fingerprint(_model(model_specs, "openclip"))
    model._tokenizer.context_length = 32
    assert model.tokenize(["a"])["input_ids"].shape[1] == 32  # the change is real
    assert tokenizer_fingerprint(model) != before


def test_unknown_and_random_tokenizers_have_no_digest(model_specs):
    model = _model(model_specs, "openclip")
    model._tokenizer.reduction_fn = lambda *a, **k: None  # open_clip's random token reduction
    assert tokenizer_fingerprint(model) is None

    class Plain:
        def __call__(self, texts):
            return torch.zeros(len(texts), 4, dtype=torch.long)

    assert tokenizer_state(Plain()) is None
    other = _model(model_specs, "openclip")
    other._tokenizer = Plain()
    assert tokenizer_fingerprint(other) is None


def test_a_tokenizer_that_fails_on_the_probe_has_no_digest(model_specs):
    model = _model(model_specs, "composed")

    def refuse(texts):
        raise ValueError("no empty strings here")

    model.tokenize = refuse
    assert tokenizer_fingerprint(model) is None
