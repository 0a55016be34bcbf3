"""Re-A's frozen lower text blocks run once: the hidden states of every training caption, cached on disk.

During Re-A only the last ``n_last`` text blocks (+ final norm, projector, logit scale) train, so the
states entering them are constant (SPEC section 8). :func:`cached_text_hidden` computes them once with
:meth:`EmbeddingModel.text_hidden_below` (eval mode: no dropout) and each step runs only
:meth:`EmbeddingModel.text_features_from_hidden` on the batch's rows.

Layout under ``cache_dir/KEY`` (KEY = the text encoder's fingerprint, ``n_last``, the dtype, the captions)::

    features.npy, progress.json, complete.json   a FeatureCache of (T, F_hidden) rows: the tokens of every
                                                 caption WITHOUT padding (see text_hidden_lengths),
                                                 caption after caption; resumable, memory-mapped
    offsets.npy   (N + 1,) int64                 caption i owns rows offsets[i]:offsets[i+1]
    tokens.npy    (T, K) int32                   the tokenizer's K tensors (input_ids, attention_mask...)
                                                 at those positions, names in tokens.json

Size on disk: (caption tokens in total) x F_hidden x 2 bytes, e.g. 1M captions of 12 tokens at width 768
(ViT-L-14's text) take 18 GB. Building it runs the lower blocks once over EVERY caption, which is what
(captions per image) epochs of uncached Re-A spend in them, since an epoch draws one caption per image:
it pays off on runs longer than that, and on every later run with the same tower, captions and unlocked
count (other learning rates, ``--resume``, the next stage of a sweep), which read it back.

A batch re-pads its rows with zeros to its longest caption; on the CPU it runs in chunks of similar
length (:func:`length_chunks`), each padded to its own longest, when that saves more padded rows than the
extra chunks cost (short captions pad a lot: on the lab's pseudo-captions, mean 4 tokens, three in four
rows of a 256-caption batch are padding). The chunks give every caption the same result as the whole
batch (the blocks mask padded keys; float rounding aside) except for dropout, whose masks are drawn per
chunk. Storage is float16 by default: on the lab
model (composed:lab, 256 emoji captions, 1 of 6 blocks unlocked) float16 instead of float32 changed the
Re-A loss by 4e-7 and the gradients by 3e-4 (relative: |difference| / |float32|), while float32 storage
matches the full tower to float rounding (loss 0, gradients 3e-7); benchmarks/realign_step.py measures
both. ``dtype="float32"`` doubles the disk and page-cache footprint.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mcip.data.cache import FeatureCache, RaggedFeatures, cache_key
from mcip.errors import InputError, UnsupportedError
from mcip.models.base import EmbeddingModel, Tokens
from mcip.models.fingerprint import model_fingerprint

log = logging.getLogger(__name__)

CHUNK_CAPTIONS = 256  # captions per forward pass of the lower blocks
# What one more chunk of a batch costs through the unlocked blocks, in padded token rows, by device type.
# CPU: composed:lab's unlocked block (width 384) took 5.5 ms + 85 us per token row forward + backward on
# 2 AMD EPYC cores (e.g. 256 x 4 rows 86 ms, 16 x 4 rows 10.5 ms), so a chunk costs about 64 rows. Other
# devices are not measured (no GPU here): their batches run whole, as before.
CHUNK_ROW_COST = {"cpu": 64}


def length_chunks(lengths: Sequence[int] | np.ndarray, row_cost: int) -> list[np.ndarray]:
    """Positions ``0..B-1`` of a batch with caption ``lengths`` (B,) split into chunks of similar length
    that minimise ``sum over chunks (size x longest) + row_cost x chunks``: the padded token rows the
    blocks run plus each chunk's overhead. Chunks are runs of the length-sorted order (an optimal split
    never interleaves lengths), found exactly by dynamic programming over the K distinct lengths
    (O(K^2)); shortest chunk first, positions ascending within a chunk."""
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if len(lengths) == 0:
        return [np.arange(0)]
    values, counts = np.unique(lengths, return_counts=True)
    before = np.concatenate([[0], np.cumsum(counts)])  # captions shorter than values[k]
    best = [0] + [0] * len(values)  # best[j]: cost of the first j distinct lengths
    cut = [0] * (len(values) + 1)
    for j in range(1, len(values) + 1):
        options = [best[i] + (before[j] - before[i]) * values[j - 1] + row_cost for i in range(j)]
        cut[j] = int(np.argmin(options))
        best[j] = options[cut[j]]
    bounds, j = [], len(values)
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    return [np.flatnonzero((lengths >= values[i]) & (lengths <= values[j - 1])) for i, j in bounds[::-1]]


def no_tokens(texts: list[str]) -> dict:
    """A CollatePairs tokenizer for cached batches: they need only ``caption_index``."""
    return {}


class TextHiddenCache:
    """Cached lower-block states of N captions; :meth:`encode` finishes the text tower for a batch.

    Args:
        hidden: (N + 1,) offsets + (T, F_hidden) rows, as :class:`RaggedFeatures`.
        tokens: the same offsets + (T, K) token rows.
        keys: the K tokenizer tensor names.
        n_last: the unlocked blocks the states enter.
        index: (N,) caption -> its row of ``hidden`` / ``tokens`` when those hold each distinct caption
            once (None: one row per caption).
    """

    def __init__(
        self,
        hidden: RaggedFeatures,
        tokens: RaggedFeatures,
        keys: Sequence[str],
        n_last: int,
        index: np.ndarray | None = None,
    ):
        self.hidden, self.tokens, self.keys, self.n_last = hidden, tokens, list(keys), n_last
        self.index = None if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.hidden) if self.index is None else len(self.index)

    def _stored(self, index: Tensor | Sequence[int]) -> np.ndarray:
        """Captions ``index`` -> their stored rows."""
        idx = torch.as_tensor(index).cpu().numpy().astype(np.int64).reshape(-1)
        return idx if self.index is None else self.index[idx]

    def batch(self, index: Tensor | Sequence[int], device, dtype: torch.dtype) -> tuple[Tensor, Tokens]:
        """Captions ``index`` (B,) -> hidden (B, L, F_hidden) in ``dtype`` + tokens {key: (B, L)}, each
        row zero-padded after its stored positions (L = the longest in the batch)."""
        stored = self._stored(index)
        flat, owner = self.hidden.rows_for(stored, dtype=torch.float16 if self._half else torch.float32)
        tok, _ = self.tokens.rows_for(stored, dtype=torch.long)
        b = len(stored)
        counts = torch.bincount(owner, minlength=b)
        pos = torch.arange(len(owner)) - (torch.cumsum(counts, 0) - counts)[owner]
        length = int(counts.max()) if b else 0
        hidden = flat.new_zeros(b, length, flat.shape[1])
        hidden[owner, pos] = flat
        padded = tok.new_zeros(b, length, tok.shape[1])
        padded[owner, pos] = tok
        tokens = {k: padded[:, :, j].to(device) for j, k in enumerate(self.keys)}
        return hidden.to(device).to(dtype), tokens

    @property
    def _half(self) -> bool:
        return self.hidden.features.dtype == np.float16

    def lengths(self, index: Tensor | Sequence[int]) -> np.ndarray:
        """(B,) the stored positions of captions ``index``."""
        idx = self._stored(index)
        return self.hidden.offsets[idx + 1] - self.hidden.offsets[idx]

    def encode(self, model: EmbeddingModel, index: Tensor | Sequence[int], chunked: bool = True) -> Tensor:
        """Captions ``index`` (B,) -> (B, D) L2-normalised text embeddings through the unlocked blocks;
        in chunks of similar length where :data:`CHUNK_ROW_COST` says it pays (``chunked=False``: the
        whole batch at once)."""
        idx = torch.as_tensor(index).cpu().reshape(-1)
        cost = CHUNK_ROW_COST.get(torch.device(model.device).type) if chunked else None
        parts = [np.arange(len(idx))] if cost is None else length_chunks(self.lengths(idx), cost)
        features = []
        for part in parts:
            hidden, tokens = self.batch(idx[torch.from_numpy(part)], model.device, model.dtype)
            features.append(model.text_features_from_hidden(hidden, tokens, self.n_last))
        if len(parts) == 1:
            out = features[0]
        else:  # back to the batch's order
            order = torch.from_numpy(np.argsort(np.concatenate(parts), kind="stable")).to(model.device)
            out = torch.cat(features).index_select(0, order)
        return F.normalize(model.project_text(out), dim=-1)


# ------------------------------------------------------------------ building
def _layout(model: EmbeddingModel, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Tokenize every caption: offsets (N + 1,), the stored token rows (T, K) int32, the K key names."""
    counts, rows, keys = [], [], None
    for lo in range(0, len(texts), 4 * CHUNK_CAPTIONS):
        tokens = model.tokenize(list(texts[lo : lo + 4 * CHUNK_CAPTIONS]))
        keys = keys or sorted(tokens)
        lengths = model.text_hidden_lengths(tokens).cpu().numpy()
        stacked = np.stack([tokens[k].cpu().numpy() for k in keys], axis=-1)  # (B, L, K)
        for row, n in zip(stacked, lengths, strict=True):
            rows.append(row[:n])
            counts.append(int(n))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return offsets, np.concatenate(rows).astype(np.int32), list(keys or [])


def _hidden_rows(model: EmbeddingModel, texts, offsets: np.ndarray, n_last: int, lo: int, hi: int):
    """Rows ``lo..hi-1`` (T-indexed) of the cache: the lower blocks over the captions that own them."""
    first = int(np.searchsorted(offsets, lo, side="right")) - 1
    last = int(np.searchsorted(offsets, hi - 1, side="right")) - 1
    tokens = model.tokenize(list(texts[first : last + 1]))
    tokens = {k: v.to(model.device) for k, v in tokens.items()}
    hidden = model.text_hidden_below(tokens, n_last).float().cpu()
    lengths = np.diff(offsets[first : last + 2])
    flat = torch.cat([h[:n] for h, n in zip(hidden, lengths, strict=True)])
    start = lo - int(offsets[first])
    return flat[start : start + hi - lo]


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _save_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _probe(model: EmbeddingModel, texts: Sequence[str], n_last: int) -> int:
    """F_hidden, from one caption; raises UnsupportedError when the backend cannot split its tower."""
    tokens = {k: v.to(model.device) for k, v in model.tokenize(list(texts[:1]) or ["a"]).items()}
    with torch.no_grad():
        return int(model.text_hidden_below(tokens, n_last).shape[-1])


def _load_layout(folder: Path):
    names = ("offsets.npy", "tokens.npy", "tokens.json", "complete.json")
    if not all((folder / n).is_file() for n in names):
        return None
    keys = json.loads((folder / "tokens.json").read_text())
    return np.load(folder / "offsets.npy"), np.load(folder / "tokens.npy", mmap_mode="r"), keys


@torch.no_grad()
def cached_text_hidden(
    model: EmbeddingModel,
    texts: Sequence[str],
    n_last: int,
    cache_dir: str | os.PathLike,
    dtype: str = "float16",
) -> TextHiddenCache:
    """The lower-block states of ``texts`` (computed once per distinct text, memory-mapped afterwards; an
    interrupted computation resumes). Raises :class:`UnsupportedError` when the backend cannot split its
    text tower."""
    if not texts:
        raise InputError("No captions to cache: the Re-A stage needs captioned training images.")
    from mcip.stages.features import distinct_texts

    texts, inverse = distinct_texts(texts)  # each distinct caption stored once, first seen first
    fingerprint = model_fingerprint(model, ("text_encoder",))
    key = cache_key("text-hidden", fingerprint, str(n_last), dtype, cache_key(*texts))
    folder = Path(cache_dir) / key
    layout = _load_layout(folder)
    encoder, was_training = model.text_encoder, model.text_encoder.training
    encoder.eval()  # the frozen blocks without dropout
    try:
        width = _probe(model, texts, n_last)
        offsets, rows, keys = layout if layout is not None else _layout(model, texts)
        mean = max(1, int(offsets[-1]) // max(1, len(texts)))
        hidden = FeatureCache(cache_dir).get_or_compute(
            key,
            int(offsets[-1]),
            width,
            lambda idx: _hidden_rows(model, texts, offsets, n_last, idx[0], idx[-1] + 1),
            batch_size=CHUNK_CAPTIONS * mean,
            dtype=dtype,
            desc="caching text hidden states",
        )
    finally:
        encoder.train(was_training)
    if layout is None:
        _save_npy(folder / "tokens.npy", rows)
        _save_json(folder / "tokens.json", keys)
        _save_npy(folder / "offsets.npy", offsets)
    tokens = np.load(folder / "tokens.npy", mmap_mode="r")
    index = None if len(texts) == len(inverse) else inverse
    return TextHiddenCache(
        RaggedFeatures(offsets, hidden), RaggedFeatures(offsets, tokens), keys, n_last, index
    )


def realign_text_cache(model: EmbeddingModel, cfg, records, cache_dir: Path) -> TextHiddenCache | None:
    """The Re-A stage's cache of ``records``' captions (in record order: SampledCaptionDataset's
    ``caption_index``), or None (full text tower) when ``cfg.realign_text_cache`` is off or the backend
    cannot split its text tower (logged). Under DDP rank 0 writes it, the others read it."""
    from mcip.stages.features import _rank0_first

    if not getattr(cfg, "realign_text_cache", True):
        return None
    texts = [c for r in records for c in r.captions]
    try:  # every rank decides alike, before rank 0 starts writing
        _probe(model, texts, cfg.unlock_text_blocks)
    except UnsupportedError as exc:
        log.warning("Re-A runs the full text tower every step: %s", exc)
        return None
    return _rank0_first(lambda: cached_text_hidden(model, texts, cfg.unlock_text_blocks, cache_dir))


def cache_val_text_hidden(checker, n_last: int, cache_dir) -> None:
    """Give ``checker`` (a :class:`mcip.engine.validate.Validator`) the states of its val captions below
    the last ``n_last`` text blocks (float32: the same embeddings as the full tower to float rounding),
    computed once and cached on disk like Re-A's training captions; valid while only those blocks (and
    what follows them) train."""
    if checker.texts:
        texts = checker.caption_texts
        checker.text_hidden = cached_text_hidden(checker.model, texts, n_last, cache_dir, dtype="float32")
