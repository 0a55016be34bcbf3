"""Text embeddings for evaluation: each distinct string encoded once, in batches of similar token length,
cached per (text tower, tokenizer, texts).

Zero-shot classification encodes every class name in every template (C x T prompts) and T2I every caption;
on CPU that is most of an evaluation. Three things make it cheap:

- the cache key is :func:`text_tower_fingerprint` (a hash of the parameters and buffers of the text path
  only, :data:`TEXT_PATH_PARTS`) plus the tokenizer's digest
  (:func:`mcip.models.tokenizer_identity.tokenizer_fingerprint`) and the distinct strings, so a model whose
  text tower is bitwise another's (GPR-FT and MCIP train only the image side) reads the other's embeddings,
  whatever its folder, without tokenising its 8,000 prompts again (a tokenizer without a digest keys the
  cache by the tokenised texts instead);
- a string is encoded once however often it appears (:func:`unique_texts`);
- the distinct texts are encoded in order of token length, ``batch_size`` at a time, each batch trimmed to
  its own longest text (:func:`encode_texts_by_length`): a batch of short prompts no longer runs the padded
  positions of the longest one (open_clip pads every prompt to 77 tokens). The cache stores the rows in
  that order, so each cached chunk is one such batch and an interrupted computation resumes;
- the states entering the last text block are cached too, keyed by :func:`lower_blocks_fingerprint` (the
  weights below that block): Re-A trains only the last block, the final norm and the projector, so a Re-A
  row (2SFT, MCIP+Re-A, the guarded row) runs one block per text instead of the whole tower.

The embeddings equal ``model.encode_text`` on the whole list up to float rounding (padded positions never
reach the pooled token: see :mod:`mcip.models.text_split`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch

from mcip._io import atomic_write_bytes
from mcip.data.cache import FeatureCache, cache_key
from mcip.errors import ConfigError, UnsupportedError
from mcip.models.base import EmbeddingModel, Tokens
from mcip.models.fingerprint import (  # noqa: F401 - the text fingerprints' old home
    TEXT_PATH_PARTS,
    lower_blocks_fingerprint,
    text_tower_fingerprint,
)
from mcip.models.tokenizer_identity import tokenizer_fingerprint, tokens_digest


def unique_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct strings of ``texts`` in first-seen order, and (N,) int64 ``inverse`` such that
    ``unique[inverse[i]] == texts[i]``."""
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), dtype=np.int64, count=len(texts))
    return list(first), inverse


def _tokens_hash(tokens: Tokens) -> str:
    return tokens_digest(tokens, 16)


class LengthOrderedTexts:
    """``texts`` tokenised once, with each row's needed length and the length order.

    ``order`` (N,) sorts the rows by :meth:`EmbeddingModel.text_hidden_lengths` (stable); a batch is a
    slice ``positions`` of that order, trimmed to its longest row (positions past a row's length never
    reach the positions before it nor its pooled token: :mod:`mcip.models.text_split`).
    """

    def __init__(self, model: EmbeddingModel, texts: Sequence[str]) -> None:
        self.model = model
        self.tokens = model.tokenize(list(texts))
        self.lengths = model.text_hidden_lengths(self.tokens).cpu().numpy().astype(np.int64)
        self.order = np.argsort(self.lengths, kind="stable")
        self.longest = int(self.lengths.max(initial=1))
        self.split = self._splittable()

    def _splittable(self) -> bool:
        try:
            self.n_blocks = len(self.model.text_block_prefixes())
        except (ConfigError, UnsupportedError):  # no named text blocks: the whole tower on full rows
            self.n_blocks = 0
            return False
        return True

    def key(self) -> str:
        return _tokens_hash(self.tokens)

    def batch(self, positions: Sequence[int]) -> tuple[Tokens, int]:
        """The token rows ``order[positions]`` trimmed to their longest, and that length."""
        rows = self.order[np.asarray(positions, dtype=np.int64)]
        longest = int(self.lengths[rows].max())
        index = torch.as_tensor(rows)
        return {k: v[index, :longest].to(self.model.device) for k, v in self.tokens.items()}, longest

    @torch.no_grad()
    def hidden(self, positions: Sequence[int], n_last: int) -> torch.Tensor:
        """(B, longest, F) states entering the last ``n_last`` blocks for ``order[positions]``."""
        tokens, _ = self.batch(positions)
        return self.model.text_hidden_below(tokens, n_last)

    @torch.no_grad()
    def top(self, hidden: torch.Tensor, positions: Sequence[int], n_last: int) -> torch.Tensor:
        """(B, D) L2-normalised embeddings from ``hidden`` (B, >= longest, F) of :meth:`hidden`."""
        tokens, longest = self.batch(positions)
        hidden = hidden[:, :longest].to(self.model.device)
        feats = self.model.text_features_from_hidden(hidden, tokens, n_last)
        return torch.nn.functional.normalize(self.model.project_text(feats), dim=-1)

    @torch.no_grad()
    def encode(self, positions: Sequence[int]) -> torch.Tensor:
        """(B, D) L2-normalised embeddings of the rows ``order[positions]`` (in that order)."""
        if self.split:
            try:
                return self.top(self.hidden(positions, self.n_blocks), positions, self.n_blocks)
            except UnsupportedError:
                self.split = False
        return self.model.encode_text(self.batch(positions)[0])

    def stored_hidden(self, cache: FeatureCache, fingerprint: str, batch_size: int, desc: str) -> np.ndarray:
        """(N, longest * F) float32 states entering the last text block, in length order, zero-padded,
        through ``cache`` keyed by :func:`lower_blocks_fingerprint` (``fingerprint``) and the tokens."""
        width = int(self.hidden([0], 1).shape[-1])
        key = cache_key("text-below-last-block", fingerprint, self.key(), str(len(self.order)))

        def compute(positions: list[int]) -> np.ndarray:
            out = np.zeros((len(positions), self.longest, width), np.float32)
            states = self.hidden(positions, 1).float().cpu().numpy()
            out[:, : states.shape[1]] = states
            return out.reshape(len(positions), -1)

        n = len(self.order)
        return cache.get_or_compute(
            key, n, self.longest * width, compute, batch_size=batch_size, dtype="float32", desc=desc
        )

    def top_from_stored(self, stored: np.ndarray, positions: Sequence[int]) -> torch.Tensor:
        rows = np.asarray(stored[np.asarray(positions, dtype=np.int64)])
        hidden = torch.from_numpy(rows).view(len(rows), self.longest, -1)
        return self.top(hidden, positions, 1)


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


ORDER_FILE = "order.npy"
"""Beside a complete text cache keyed by raw strings: the token-length order its rows are stored in."""


def _stored_order(folder, n: int) -> np.ndarray | None:
    """The (n,) permutation saved beside a cache (:data:`ORDER_FILE`), or None when it is missing or
    damaged."""
    try:
        order = np.load(folder / ORDER_FILE, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if order.shape != (n,) or order.dtype.kind not in "iu":
        return None
    order = order.astype(np.int64)
    if n and (order.min() < 0 or order.max() >= n or np.bincount(order, minlength=n).max() != 1):
        return None
    return order


def _save_order(folder, order: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(order, dtype=np.int64), allow_pickle=False)
    atomic_write_bytes(folder / ORDER_FILE, buffer.getvalue())


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
    distinct texts. Rows are stored in token-length order; see the module docstring. ``width`` (D) is
    measured with one text when not given.

    Where the model's tokenizer has a digest (:func:`mcip.models.tokenizer_identity.tokenizer_fingerprint`)
    the key holds it and the raw strings, and the length order is saved beside the rows: a complete cache
    is read without tokenising anything. Otherwise the key holds the tokenised texts."""
    texts = list(texts)
    unique, inverse = unique_texts(texts)
    if not unique:
        return np.zeros((0, model.encode_text(["a"]).shape[-1]), np.float32)
    fingerprint = fingerprint or text_tower_fingerprint(model)
    cache = FeatureCache(cache_dir)
    tokenizer = tokenizer_fingerprint(model)
    key = done = None
    if tokenizer is not None:
        key = cache_key("text-by-tower", fingerprint, tokenizer, cache_key(*unique), str(len(unique)))
        done = cache.get(key, len(unique))
        order = _stored_order(cache.root / key, len(unique)) if done is not None else None
        if order is not None:
            return _by_row(np.asarray(done, dtype=np.float32), order, inverse)
    ordered = LengthOrderedTexts(model, unique)
    key = key or cache_key("text-by-tower", fingerprint, ordered.key(), str(len(unique)))
    width = width or (done.shape[1] if done is not None else int(ordered.encode([0]).shape[-1]))
    compute = ordered.encode
    if ordered.split and ordered.n_blocks >= 2 and not (cache.root / key / "complete.json").is_file():
        try:  # the lower blocks once per lower-block weights: a Re-A row runs only its last block
            lower = lower_blocks_fingerprint(model, 1)
            stored = ordered.stored_hidden(cache, lower, batch_size, f"{desc} (lower text blocks)")
            compute = partial(ordered.top_from_stored, stored)
        except UnsupportedError:
            pass
    rows = cache.get_or_compute(
        key,
        len(unique),
        width,
        lambda positions: compute(positions).float().cpu().numpy(),
        batch_size=batch_size,
        dtype="float32",
        desc=desc,
    )
    if tokenizer is not None:
        _save_order(cache.root / key, ordered.order)
    return _by_row(np.asarray(rows, dtype=np.float32), ordered.order, inverse)


def _by_row(rows: np.ndarray, order: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Rows stored in length ``order`` -> one row per text (``inverse``: text -> distinct string)."""
    by_unique = np.empty_like(rows)
    by_unique[order] = rows
    return by_unique[inverse]
