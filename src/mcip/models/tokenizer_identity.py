"""What a model's tokenizer does, as a digest: a text cache keyed by the raw strings and this digest needs
no tokenising to be read.

Evaluation keys its text embeddings by the text tower's weights and the texts
(:func:`mcip.eval.text_encoding.cached_text_embeddings_by_tower`). The strings alone are not enough: two
models with equal text weights but another tokenizer (another vocabulary, context length or cleaning)
see other tokens. :func:`tokenizer_fingerprint` digests the tokenizer's own state (the serialised
vocabulary, merges, normaliser and special tokens of a Hugging Face fast tokenizer; the vocabulary, BPE
merges, context length and cleaning of open_clip's ``SimpleTokenizer``; a wrapper's settings around an
inner tokenizer) together with the model's tokens for a few probe strings (an empty one, non-ASCII and
one longer than any context, so the model's padding and truncation rules enter too). A tokenizer it does
not know, or one that draws at random (open_clip's token reduction), has no digest: its texts are then
tokenised to key the cache, as before.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

PROBE_TEXTS = ("a photo of a dog.", "", "Ünïcödé ☃ 東京 — naïve café", "word " * 600)
"""Strings every digest tokenises: short, empty, non-ASCII, and longer than any context length."""

_WRAPPER_SETTINGS = ("context_length", "strip_sep_token", "tokenizer_mode", "language")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _callable_name(fn: Any) -> str | None:
    if fn is None:
        return None
    inner = getattr(fn, "func", fn)  # functools.partial
    name = f"{getattr(inner, '__module__', '')}.{getattr(inner, '__qualname__', repr(inner))}"
    args = getattr(fn, "args", ()), sorted(getattr(fn, "keywords", {}).items())
    return f"{name}{args!r}" if fn is not inner else name


def tokenizer_state(tokenizer: Any) -> dict | None:
    """A JSON-able description of everything ``tokenizer`` maps strings with, or None where it is not
    known (or not deterministic)."""
    kind = f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):  # a Hugging Face fast tokenizer
        return {
            "type": kind,
            "backend": _sha(backend.to_str()),
            "model_max_length": str(getattr(tokenizer, "model_max_length", None)),
            "padding_side": getattr(tokenizer, "padding_side", None),
            "truncation_side": getattr(tokenizer, "truncation_side", None),
            "special": json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str),
        }
    if hasattr(tokenizer, "encoder") and hasattr(tokenizer, "bpe_ranks"):  # open_clip's SimpleTokenizer
        if getattr(tokenizer, "reduction_fn", None) is not None:
            return None  # random token reduction: the same string gives other tokens
        pattern = getattr(getattr(tokenizer, "pat", None), "pattern", None)
        return {
            "type": kind,
            "encoder": _sha(json.dumps(sorted(tokenizer.encoder.items()))),
            "bpe": _sha(json.dumps(sorted((list(k), v) for k, v in tokenizer.bpe_ranks.items()))),
            "context_length": getattr(tokenizer, "context_length", None),
            "clean": _callable_name(getattr(tokenizer, "clean_fn", None)),
            "pattern": pattern,
        }
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and inner is not tokenizer:  # a wrapper (open_clip's HFTokenizer, SigLipTokenizer)
        inner_state = tokenizer_state(inner)
        if inner_state is None:
            return None
        settings = {k: getattr(tokenizer, k) for k in _WRAPPER_SETTINGS if hasattr(tokenizer, k)}
        return {
            "type": kind,
            "inner": inner_state,
            "settings": json.dumps(settings, sort_keys=True, default=str),
            "clean": _callable_name(getattr(tokenizer, "clean_fn", None)),
        }
    return None


def tokens_digest(tokens: dict[str, torch.Tensor], chars: int = 32) -> str:
    """The first ``chars`` hex digits of the sha256 of a tokenizer output: each tensor's name, dtype,
    shape and values, by name."""
    h = hashlib.sha256()
    for name in sorted(tokens):
        t = tokens[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:chars]


def tokenizer_fingerprint(model) -> str | None:
    """Hex digest (16 chars) of how ``model`` turns strings into tokens (see the module docstring), or
    None where that is not known. Computed once per model object (its tokenizer does not change)."""
    memo = model.__dict__.get("_mcip_tokenizer_fingerprint", ())
    if memo != ():
        return memo
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        tokenizer = getattr(model, "_tokenizer", None)
    state = tokenizer_state(tokenizer) if tokenizer is not None else None
    digest = None
    if state is not None:
        try:
            probe = tokens_digest(model.tokenize(list(PROBE_TEXTS)))
        except Exception:  # a tokenizer that cannot take the probe has no digest
            probe = None
        if probe is not None:
            head = {"backend": model.backend, "class": type(model).__name__, "state": state, "probe": probe}
            digest = hashlib.blake2b(json.dumps(head, sort_keys=True).encode(), digest_size=8).hexdigest()
    model.__dict__["_mcip_tokenizer_fingerprint"] = digest
    return digest
