"""Exact ranks without sorting whole rows: the machinery under ``mcip.eval.metrics``.

How ranks are computed (exact, and without sorting whole rows). Only the rank of each relevant item is
needed: ``rank = 1 + #{j : s_j > s_r, or s_j == s_r and j < r}``. One comparison pass over a chunk of
similarities keeps the candidates: the columns at least as similar as the row's least similar relevant item
(a few percent of them on real data). Each candidate and each relevant item is mapped to a unique int64 key
whose order is exactly the ranking order within its row (row, then float bits made monotone, then the index
as tie-break); one binary search of every candidate among the sorted relevant keys and a histogram of the
positions give every relevant item's rank at once. Queries are processed ``chunk_size`` rows at a time, and
never more than ``MAX_CHUNK_ELEMENTS`` similarities at once, so peak memory is at most about 50 bytes x
MAX_CHUNK_ELEMENTS (~0.8 GB, when every column is a candidate) whatever the database size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from mcip.errors import InputError

MAX_CHUNK_ELEMENTS = 1 << 24
"""Most query x database similarities held at once (a chunk has at most this many / N query rows)."""

_KEY_BITS = 63
"""Bits of a candidate's key (row, similarity, column); more rows than fit are ranked in halves."""


# ---------------------------------------------------------------- validation


def _check_embeddings(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{name} must be a floating (B, D) tensor, got {shape}.")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contain NaN or Inf values; drop or re-encode those rows.")
    return x.detach().float().cpu()


def _check_pair(queries: Tensor, database: Tensor) -> tuple[Tensor, Tensor]:
    queries = _check_embeddings(queries, "query embeddings")
    database = _check_embeddings(database, "database embeddings")
    if queries.shape[1] != database.shape[1] or (len(database) == 0 < len(queries)):
        raise InputError(
            f"Expected (Q, D) queries and an (N, D) database of the same width, N > 0, got "
            f"{tuple(queries.shape)} and {tuple(database.shape)}."
        )
    return queries, database


def _check_index(values: Tensor, length: int, name: str, upper: int | None = None) -> Tensor:
    """A (length,) integer tensor, optionally with every value in [0, upper)."""
    values = torch.as_tensor(values)
    if values.shape != (length,) or values.is_floating_point() or values.dtype == torch.bool:
        raise InputError(
            f"{name} must be a ({length},) integer tensor, got {tuple(values.shape)} {values.dtype}."
        )
    values = values.long()
    if upper is not None and length and (values.min() < 0 or values.max() >= upper):
        raise InputError(f"{name} must lie in [0, {upper}), got [{int(values.min())}, {int(values.max())}].")
    return values


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if not ks or any(int(k) < 1 for k in ks):
        raise InputError(f"ks must be positive integers, got {tuple(ks)}.")
    return tuple(int(k) for k in ks)


# ---------------------------------------------------------------- exact ranks


def _chunks(n_queries: int, n_database: int, chunk_size: int) -> Iterator[slice]:
    rows = max(1, min(chunk_size, MAX_CHUNK_ELEMENTS // max(n_database, 1)))
    for start in range(0, n_queries, rows):
        yield slice(start, min(start + rows, n_queries))


def _buffer(n_queries: int, n_database: int, chunk_size: int) -> Tensor:
    """One float32 buffer for every chunk's similarities (reused, so no fresh pages per chunk)."""
    rows = max(1, min(chunk_size, MAX_CHUNK_ELEMENTS // max(n_database, 1), n_queries))
    return torch.empty(rows * n_database)


def _similarities(queries: Tensor, database: Tensor, buffer: Tensor) -> Tensor:
    """(c, N) float32 ``queries @ database.T``, written into ``buffer``."""
    out = buffer[: len(queries) * len(database)].view(len(queries), len(database))
    return torch.mm(queries, database.T, out=out)


def _monotone_bits(sim: Tensor) -> Tensor:
    """int64 in [0, 2**32) ordered exactly like float32 ``sim`` (-0.0 and +0.0 map to the same value)."""
    bits = (sim + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0, which compare equal as floats
    bits = bits ^ (bits >> 31).bitwise_and_(0x7FFFFFFF)  # sign-magnitude -> two's complement
    return bits.to(torch.int64).add_(1 << 31)


def _order_keys(sim: Tensor, cols: Tensor) -> Tensor:
    """Unique int64 keys ordered like the ranking: key_a > key_b iff s_a > s_b, or s_a == s_b and a < b.

    ``sim`` is float32 (any shape), ``cols`` the database index of each entry (broadcastable).
    """
    keys = _monotone_bits(sim).sub_(1 << 31).mul_(1 << 32)  # signed, so that the key fits in int64
    return keys.add_((1 << 32) - 1 - cols)  # the lower 32 bits: the smaller index, the larger key


def _relevant_ranks(sim: Tensor, rel_idx: Tensor, rel_valid: Tensor) -> Tensor:
    """(c, R) float64 1-based ranks of each row's relevant columns, best first, +inf where not valid.

    ``sim``: (c, N) float32; columns set to -inf are removed from the ranking (never counted, never relevant).
    ``rel_idx``: (c, R) column indices, ``rel_valid``: (c, R) which of them are real (the rest is padding).
    rank(r) = 1 + #{columns j (not removed): s_j > s_r, or s_j == s_r and j < r}.

    Only the candidates (columns at least as similar as the row's least similar relevant item) are touched
    after one comparison pass. Each candidate and each relevant item gets one int64 key that orders first
    by row, then by similarity, then by column (descending), so one ``searchsorted`` of every candidate
    among all rows' sorted relevant keys counts, per candidate, the relevant items of its own row it ranks
    at or above; a histogram of those counts gives every relevant item's rank.
    """
    c, r = rel_idx.shape
    n = sim.shape[1]
    col_bits = max((n - 1).bit_length(), 1)
    row_shift = 32 + col_bits
    if c > 1 and (c - 1).bit_length() + row_shift > _KEY_BITS:  # keys would overflow: fewer rows at a time
        half = c // 2
        return torch.cat(
            [
                _relevant_ranks(sim[:half], rel_idx[:half], rel_valid[:half]),
                _relevant_ranks(sim[half:], rel_idx[half:], rel_valid[half:]),
            ]
        )
    rel_sim = sim.gather(1, rel_idx)
    worst = rel_sim.masked_fill(~rel_valid, float("inf")).min(1).values
    row_of = torch.arange(c).unsqueeze(1)
    rel_keys = (row_of << row_shift) | (_monotone_bits(rel_sim) << col_bits) | (n - 1 - rel_idx)
    row_end = ((row_of + 1) << row_shift) - 1  # padding: above every key of its row, below the next row
    rel_keys = torch.where(rel_valid, rel_keys, row_end).reshape(-1).sort().values
    flat = (sim >= worst.unsqueeze(1)).reshape(-1).nonzero().squeeze(1)
    row = flat // n
    keys = (
        (row << row_shift) | (_monotone_bits(sim.reshape(-1)[flat]) << col_bits) | (n - 1 - (flat - row * n))
    )
    below = torch.searchsorted(rel_keys, keys, right=True) - row * r  # #relevant keys of its row <= key
    counts = torch.bincount(row * (r + 1) + below, minlength=c * (r + 1)).view(c, r + 1)
    at_or_above = counts.flip(1).cumsum(1).flip(1)[:, 1:]  # [:, m] = #{keys >= m-th smallest relevant key}
    n_valid = rel_valid.sum(1, keepdim=True)
    ranks = at_or_above.double().masked_fill(torch.arange(r) >= n_valid, float("inf"))
    return ranks.sort(1).values


def _best_relevant(sim: Tensor, rel_idx: Tensor, rel_valid: Tensor) -> tuple[Tensor, Tensor]:
    """The best-ranked relevant column of each row, as ((c, 1) index, (c, 1) valid)."""
    keys = _order_keys(sim.gather(1, rel_idx), rel_idx).masked_fill(~rel_valid, torch.iinfo(torch.int64).min)
    best = keys.argmax(1, keepdim=True)
    return rel_idx.gather(1, best), rel_valid.any(1, keepdim=True)


class _Groups:
    """Database rows grouped by label: ``members(query_labels)`` -> ((c, R) indices, (c, R) valid)."""

    def __init__(self, labels: Tensor) -> None:
        self.order = torch.argsort(labels, stable=True)
        self.values, self.counts = torch.unique(labels, return_counts=True)
        self.starts = self.counts.cumsum(0) - self.counts

    def members(self, query_labels: Tensor) -> tuple[Tensor, Tensor]:
        g = torch.searchsorted(self.values, query_labels).clamp(max=len(self.values) - 1)
        n = torch.where(self.values[g] == query_labels, self.counts[g], 0)
        j = torch.arange(max(int(n.max()), 1))
        idx = self.order[(self.starts[g].unsqueeze(1) + j).clamp(max=len(self.order) - 1)]
        return idx, j < n.unsqueeze(1)


def _remove(sim: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Take (rows[i], cols[i]) out of the ranking (similarity -inf)."""
    sim[rows, cols] = float("-inf")
    return sim


def _same_label_chunk(
    emb: Tensor, labels: Tensor, rows: slice, include_self: bool, groups: _Groups, buffer: Tensor
):
    """(c, N) similarities of query rows ``rows`` to all items, and their same-label items (c, R) + valid."""
    q = torch.arange(rows.start, rows.stop)
    sim = _similarities(emb[rows], emb, buffer)
    idx, valid = groups.members(labels[rows])
    if not include_self:
        sim = _remove(sim, torch.arange(len(q)), q)
        valid &= idx != q.unsqueeze(1)
    return sim, idx, valid


# ---------------------------------------------------------------- image-to-image retrieval
