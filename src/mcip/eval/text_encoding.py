"""Text embeddings for evaluation: each distinct string encoded once, in batches of similar token length,
cached per (text tower, tokenised texts).

Zero-shot classification encodes every class name in every template (C x T prompts) and T2I every caption;
on CPU that is most of an evaluation. Three things make it cheap:

- the cache key is :func:`text_tower_fingerprint` (a hash of the parameters and buffers of the text path
  only, :data:`TEXT_PATH_PARTS`) plus a hash of the tokenised texts, so a model whose text tower is bitwise
  another's (GPR-FT and MCIP train only the image side) reads the other's embeddings, whatever its folder;
- a string is encoded once however often it appears (:func:`unique_texts`);
- the distinct texts are encoded in order of token length, ``batch_size`` at a time, each batch trimmed to
  its own longest text (:func:`encode_texts_by_length`): a batch of short prompts no longer runs the padded
  positions of the longest one (open_clip pads every prompt to 77 tokens). The cache stores the rows in
  that order, so each cached chunk is one such batch and an interrupted computation resumes.

The embeddings equal ``model.encode_text`` on the whole list up to float rounding (padded positions never
reach the pooled token: see :mod:`mcip.models.text_split`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from mcip.data.cache import FeatureCache, cache_key
from mcip.errors import ConfigError, UnsupportedError
from mcip.models.base import EmbeddingModel, Tokens

TEXT_PATH_PARTS = ("text_encoder", "text_projector")
"""The parts whose parameters and buffers make a text embedding (``EmbeddingModel.part_of``)."""


def text_tower_fingerprint(model: EmbeddingModel) -> str:
    """Hex digest (16 chars) of what a text embedding depends on: the backend, the recorded surgery, the
    text pooling where the backend has one, and the name, dtype, shape and bytes of every parameter and
    buffer (non-persistent ones included) of :data:`TEXT_PATH_PARTS`. The image side and the model's folder
    do not enter it."""
    h = hashlib.blake2b(digest_size=8)
    head = {
        "backend": model.backend,
        "class": type(model).__name__,
        "modifications": model.modifications,
        "pooling": str(getattr(model.net, "pooling", "")),
    }
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    tensors = dict(model.net.named_parameters()) | dict(model.net.named_buffers())
    for name in sorted(tensors):
        if model.part_of(name) not in TEXT_PATH_PARTS:
            continue
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensors[name].shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def unique_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct strings of ``texts`` in first-seen order, and (N,) int64 ``inverse`` such that
    ``unique[inverse[i]] == texts[i]``."""
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), dtype=np.int64, count=len(texts))
    return list(first), inverse


def _tokens_hash(tokens: Tokens) -> str:
    h = hashlib.sha256()
    for name in sorted(tokens):
        t = tokens[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


class LengthOrderedTexts:
    """``texts`` tokenised once, with each row's needed length and the length order.

    ``order`` (N,) sorts the rows by :meth:`EmbeddingModel.text_hidden_lengths` (stable);
    :meth:`encode` runs a slice of that order trimmed to its longest row.
    """

    def __init__(self, model: EmbeddingModel, texts: Sequence[str]) -> None:
        self.model = model
        self.tokens = model.tokenize(list(texts))
        self.lengths = model.text_hidden_lengths(self.tokens).cpu().numpy().astype(np.int64)
        self.order = np.argsort(self.lengths, kind="stable")
        self.split = self._splittable()

    def _splittable(self) -> bool:
        try:
            self.n_blocks = len(self.model.text_block_prefixes())
        except (ConfigError, UnsupportedError):  # no named text blocks: the whole tower on full rows
            return False
        return True

    def key(self) -> str:
        return _tokens_hash(self.tokens)

    @torch.no_grad()
    def encode(self, positions: Sequence[int]) -> torch.Tensor:
        """(B, D) L2-normalised embeddings of the rows ``order[positions]`` (in that order)."""
        rows = torch.as_tensor(self.order[np.asarray(positions, dtype=np.int64)])
        device = self.model.device
        batch = {k: v[rows].to(device) for k, v in self.tokens.items()}
        longest = int(self.lengths[rows.numpy()].max())
        if self.split and longest < batch["input_ids"].shape[1]:
            try:
                hidden = self.model.text_hidden_below(batch, self.n_blocks)[:, :longest]
                trimmed = {k: v[:, :longest] for k, v in batch.items()}
                feats = self.model.text_features_from_hidden(hidden, trimmed, self.n_blocks)
                return torch.nn.functional.normalize(self.model.project_text(feats), dim=-1)
            except UnsupportedError:
                self.split = False
        return self.model.encode_text(batch)


def encode_texts_by_length(
    model: EmbeddingModel, texts: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """(N, D) float32 L2-normalised embeddings of ``texts`` in their order, computed once per distinct
    string, ``batch_size`` strings at a time in token-length order (no cache)."""
    unique, inverse = unique_texts(texts)
    ordered = LengthOrderedTexts(model, unique) if unique else None
    parts = [
        ordered.encode(range(lo, min(lo + batch_size, len(unique)))).float().cpu()
        for lo in range(0, len(unique), batch_size)
    ]
    emb = torch.cat(parts) if parts else torch.zeros(0, model.encode_text(["a"]).shape[-1])
    by_row = torch.empty_like(emb)
    if len(unique):
        by_row[torch.as_tensor(ordered.order)] = emb
    return by_row[torch.as_tensor(inverse)]


def cached_text_embeddings_by_tower(
    model: EmbeddingModel,
    texts: Sequence[str],
    cache_dir: str | os.PathLike,
    batch_size: int = 256,
    desc: str = "encoding texts",
    fingerprint: str | None = None,
    width: int | None = None,
) -> np.ndarray:
    """(N, D) float32 L2-normalised text embeddings of ``texts`` through a :class:`FeatureCache` keyed by
    the text tower (``fingerprint``: :func:`text_tower_fingerprint`, computed when not given) and the
    tokenised distinct texts. Rows are stored in token-length order; see the module docstring. ``width``
    (D) is measured with one text when not given."""
    texts = list(texts)
    unique, inverse = unique_texts(texts)
    if not unique:
        return np.zeros((0, model.encode_text(["a"]).shape[-1]), np.float32)
    ordered = LengthOrderedTexts(model, unique)
    width = width or int(ordered.encode([0]).shape[-1])
    fingerprint = fingerprint or text_tower_fingerprint(model)
    key = cache_key("text-by-tower", fingerprint, ordered.key(), str(len(unique)))
    stored = FeatureCache(cache_dir).get_or_compute(
        key,
        len(unique),
        width,
        lambda positions: ordered.encode(positions).float().cpu().numpy(),
        batch_size=batch_size,
        dtype="float32",
        desc=desc,
    )
    by_unique = np.empty((len(unique), width), np.float32)
    by_unique[ordered.order] = np.asarray(stored, dtype=np.float32)
    return by_unique[inverse]
