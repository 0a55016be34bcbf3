"""The text side of an ONNX export: the tokenizer's files, the rules that turn strings into the text
graph's inputs, and a tokenizer rebuilt from those files and rules alone.

Two kinds (``TOKENIZER_KINDS``), each a :class:`TokenizerKind` with ``describe`` (write the files into an
export folder and return the JSON rules) and ``load`` (rebuild from the folder and the rules):

- ``huggingface``: a fast tokenizer's ``tokenizer/tokenizer.json`` (composed and ``hf:`` models), run with
  the ``tokenizers`` library: truncation at ``context_length`` tokens, padding with ``pad_token_id`` to the
  longest text of the batch (``padding: "longest"``) or to ``context_length`` (``"max_length"``).
- ``open_clip_bpe``: open_clip's CLIP byte-pair encoding (``bpe_simple_vocab_16e6.txt.gz``): text cleaned
  (``clean``: ``lower`` = ftfy + HTML unescape + whitespace collapse + lowercase), ``[sot] + BPE + [eot]``,
  cut to ``context_length`` with ``eot`` kept as the last token, right-padded with 0 to ``context_length``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcip.errors import UnsupportedError, require
from mcip.models.base import EmbeddingModel
from mcip.registry import Registry

TEXT_INPUTS = ("input_ids", "attention_mask")
"""The tokenizer outputs a text graph may take, in this order (``token_type_ids`` are all 0 for one
sentence, the towers' default, and are not inputs)."""


@dataclass(frozen=True)
class TokenizerKind:
    """``describe(model, folder) -> rules`` writes the files; ``load(folder, rules) -> tokenize`` rebuilds a
    function from B strings to ``{name: (B, L) int64 array}``."""

    describe: Callable[[EmbeddingModel, Path], dict[str, Any]]
    load: Callable[[Path, dict[str, Any]], Callable[[Sequence[str]], dict[str, np.ndarray]]]


TOKENIZER_KINDS: Registry[TokenizerKind] = Registry("tokenizer kind")


def _hf_rules(model: EmbeddingModel) -> tuple[int, str]:
    """(context length, padding) of a composed or hf model's ``tokenize``."""
    if model.backend == "composed":
        tok, text_cfg = model.tokenizer, model.net.text.config
        return min(int(tok.model_max_length), int(text_cfg.max_position_embeddings)), "longest"
    from mcip.models.hf import _FAMILIES

    padding = _FAMILIES[model.model_type]["padding"]
    return int(model.net.config.text_config.max_position_embeddings), padding


def _describe_hf(model: EmbeddingModel, folder: Path) -> dict[str, Any]:
    tok = model.tokenizer
    if not getattr(tok, "is_fast", False):
        raise UnsupportedError(
            f"The tokenizer of {model.spec} ({type(tok).__name__}) is not a fast (tokenizer.json) tokenizer, "
            "so the export could not spell it out for onnxruntime; export a model with a fast tokenizer."
        )
    tok.save_pretrained(folder / "tokenizer")
    if not (folder / "tokenizer" / "tokenizer.json").is_file():
        raise UnsupportedError(f"Saving the tokenizer of {model.spec} wrote no tokenizer.json.")
    context, padding = _hf_rules(model)
    inputs = [name for name in TEXT_INPUTS if name in model.tokenize(["a"])]
    return {
        "kind": "huggingface",
        "file": "tokenizer/tokenizer.json",
        "context_length": context,
        "truncation": True,
        "padding": padding,
        "pad_token_id": int(tok.pad_token_id),
        "pad_token": str(tok.pad_token),
        "inputs": inputs,
    }


def _load_hf(folder: Path, rules: dict[str, Any]):
    tokenizers = require("tokenizers", "onnx", "The tokenizer of an ONNX export")
    tok = tokenizers.Tokenizer.from_file(str(folder / rules["file"]))
    tok.no_padding()
    tok.no_truncation()
    tok.enable_truncation(int(rules["context_length"]))
    length = int(rules["context_length"]) if rules["padding"] == "max_length" else None
    tok.enable_padding(pad_id=int(rules["pad_token_id"]), pad_token=rules["pad_token"], length=length)
    names = list(rules["inputs"])

    def tokenize(texts: Sequence[str]) -> dict[str, np.ndarray]:
        encodings = tok.encode_batch(list(texts))
        out = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64)}
        out["attention_mask"] = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return {name: out[name] for name in names}

    return tokenize


def _describe_openclip(model: EmbeddingModel, folder: Path) -> dict[str, Any]:
    from open_clip import tokenizer as oct

    tok = model._tokenizer
    plain = (
        isinstance(tok, oct.SimpleTokenizer)
        and tok.clean_fn is oct._clean_lower
        and tok.reduction_fn is None
        and tok.all_special_ids == [tok.sot_token_id, tok.eot_token_id]
        and tok.vocab_size == len(oct.SimpleTokenizer().encoder)
    )
    if not plain:
        raise UnsupportedError(
            f"The export spells out open_clip's plain CLIP BPE tokenizer only; {model.spec} uses "
            f"{type(tok).__name__} with other settings. Export a model with the default CLIP tokenizer."
        )
    shutil.copyfile(oct.default_bpe(), folder / "bpe_simple_vocab_16e6.txt.gz")
    return {
        "kind": "open_clip_bpe",
        "file": "bpe_simple_vocab_16e6.txt.gz",
        "context_length": int(tok.context_length),
        "clean": "lower",
        "sot_token_id": int(tok.sot_token_id),
        "eot_token_id": int(tok.eot_token_id),
        "truncation": "keep the first context_length tokens, the last one set to eot_token_id",
        "padding": "max_length",
        "pad_token_id": 0,
        "inputs": ["input_ids"],
    }


def _load_openclip(folder: Path, rules: dict[str, Any]):
    oct = require("open_clip.tokenizer", "onnx", "The CLIP BPE tokenizer of an open_clip ONNX export")
    tok = oct.SimpleTokenizer(
        bpe_path=str(folder / rules["file"]),
        context_length=int(rules["context_length"]),
        clean=rules["clean"],
    )

    def tokenize(texts: Sequence[str]) -> dict[str, np.ndarray]:
        return {"input_ids": tok(list(texts)).numpy().astype(np.int64)}

    return tokenize


TOKENIZER_KINDS.register("huggingface")(TokenizerKind(_describe_hf, _load_hf))
TOKENIZER_KINDS.register("open_clip_bpe")(TokenizerKind(_describe_openclip, _load_openclip))
BACKEND_TOKENIZERS = {"composed": "huggingface", "hf": "huggingface", "openclip": "open_clip_bpe"}
"""Which tokenizer kind each model backend's export writes."""


def describe_tokenizer(model: EmbeddingModel, folder: Path) -> dict[str, Any]:
    """Write ``model``'s tokenizer files into ``folder`` and return the rules (the ``text.tokenizer`` JSON)."""
    kind = BACKEND_TOKENIZERS.get(model.backend)
    if kind is None:
        raise UnsupportedError(
            f"ONNX export knows the tokenizers of the {', '.join(sorted(BACKEND_TOKENIZERS))} backends, "
            f"not {model.backend}."
        )
    return TOKENIZER_KINDS.get(kind).describe(model, folder)


def load_tokenizer(folder: Path, rules: dict[str, Any]) -> Callable[[Sequence[str]], dict[str, np.ndarray]]:
    """The tokenizer of an export folder, rebuilt from its files and ``rules`` (no model needed)."""
    return TOKENIZER_KINDS.get(rules["kind"]).load(folder, rules)
