"""Revisited Oxford/Paris (Radenović et al., CVPR 2018): AP and precision@k over the easy / medium / hard
settings, exactly as revisitop's ``compute_map``; a pure tensor function with the conventions of
:mod:`mcip.eval.metrics` (which re-exports it): L2-normalised (B, D) rows, cosine similarity in float32 on
the CPU, ties by database index, query chunks bounded by ``MAX_CHUNK_ELEMENTS`` similarities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from mcip.errors import InputError
from mcip.eval.ranking import (
    _buffer,
    _check_ks,
    _check_pair,
    _chunks,
    _relevant_ranks,
    _remove,
    _similarities,
)

_KS_REVISITED = (1, 5, 10)


def _revisited_sets(g: Mapping, setting: str, n: int, i: int) -> tuple[Tensor, Tensor]:
    """(positives, junk) database indices of one revisitop ground-truth entry for ``setting``."""
    try:
        easy, hard, junk = (
            torch.as_tensor(g[key], dtype=torch.long).reshape(-1) for key in ("easy", "hard", "junk")
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"gnd[{i}] must map 'easy', 'hard' and 'junk' to integer index lists ({exc})."
        ) from exc
    listed = torch.cat([easy, hard, junk])
    if len(listed) and (listed.min() < 0 or listed.max() >= n or len(listed.unique()) != len(listed)):
        raise InputError(
            f"gnd[{i}]: every index must lie in [0, {n}) and appear at most once across easy/hard/junk; "
            f"is this the ground truth of this database?"
        )
    positives = {"easy": [easy], "medium": [easy, hard], "hard": [hard]}[setting]
    removed = {"easy": [junk, hard], "medium": [junk], "hard": [junk, easy]}[setting]
    return torch.cat(positives), torch.cat(removed)


def _pad(lists: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Ragged index lists -> ((c, R) indices padded with 0, (c, R) valid)."""
    n = torch.tensor([len(x) for x in lists])
    j = torch.arange(max(int(n.max()), 1))
    idx = torch.zeros(len(lists), len(j), dtype=torch.long)
    valid = j < n.unsqueeze(1)
    idx[valid] = torch.cat(list(lists))
    return idx, valid


def _trapezoid_ap(ranks0: Tensor, n_pos: Tensor) -> Tensor:
    """revisitop ``compute_ap``: (c, R) 0-based positive ranks (best first, +inf padding) -> (c,) AP."""
    before = torch.arange(ranks0.shape[1], dtype=torch.float64)  # positives ranked above this one
    p0 = torch.where(ranks0 > 0, before / ranks0, 1.0)
    p1 = (before + 1) / (ranks0 + 1)
    return ((p0 + p1) / 2).masked_fill(torch.isinf(ranks0), 0).sum(1) / n_pos


def _revisited_precision(ranks: Tensor, ks: Sequence[int]) -> Tensor:
    """revisitop's mP@k per query: (c, R) 1-based positive ranks (+inf padding) -> (c, len(ks))."""
    last = ranks.masked_fill(torch.isinf(ranks), 0).max(1).values  # rank of the last positive
    out = []
    for k in ks:
        kq = last.clamp(max=k)
        out.append((ranks <= kq.unsqueeze(1)).sum(1) / kq)
    return torch.stack(out, 1)


def revisited_average_precision(
    query_emb: Tensor,
    db_emb: Tensor,
    gnd: Sequence[Mapping],
    setting: Literal["easy", "medium", "hard"] = "medium",
    ks: Sequence[int] = _KS_REVISITED,
) -> tuple[Tensor, Tensor]:
    """Revisited Oxford/Paris AP and precision@k, exactly as revisitop's ``compute_map`` (Radenović 2018).

    Definition: ``gnd[i]`` holds ``easy``, ``hard`` and ``junk`` database indices for query i. Per setting,
    positives / junk are: easy: easy / junk+hard; medium: easy+hard / junk; hard: hard / junk+easy.
    Junk items are removed from the ranking; then, for the j-th positive (0-based, best first) at 0-based
    rank i, ``precision_0 = j / i`` (1 if i == 0), ``precision_1 = (j + 1) / (i + 1)`` and
    ``AP = sum (precision_0 + precision_1) / 2 / n_pos`` (trapezoidal rule over the PR curve).
    Precision@k with pos the 1-based positive ranks: ``kq = min(max(pos), k)``, ``P@k = #(pos <= kq) / kq``.
    A query without positives gets NaN in both (revisitop skips it in the mean: use ``nanmean``).
    Ties: by database index, ascending (revisitop's unstable ``argsort`` leaves them unspecified).
    An index listed twice across easy/hard/junk is an error.

    Args:
        query_emb: (Q, D) L2-normalised; db_emb: (N, D) L2-normalised; gnd: Q entries.

    Returns:
        (Q,) float64 AP and (Q, len(ks)) float64 precision@k.
    """
    if setting not in ("easy", "medium", "hard"):
        raise InputError(f"setting must be 'easy', 'medium' or 'hard', got {setting!r}.")
    ks = _check_ks(ks)
    queries, db = _check_pair(query_emb, db_emb)
    if len(gnd) != len(queries):
        raise InputError(
            f"gnd has {len(gnd)} entries for {len(queries)} queries; they must match one to one."
        )
    sets = [_revisited_sets(g, setting, len(db), i) for i, g in enumerate(gnd)]
    buffer = _buffer(len(queries), len(db), 1024)
    ap = torch.empty(len(queries), dtype=torch.float64)
    precision = torch.empty(len(queries), len(ks), dtype=torch.float64)
    for rows in _chunks(len(queries), len(db), 1024):
        positives, junk = zip(*sets[rows], strict=True)
        sim = _similarities(queries[rows], db, buffer)
        junk_rows = torch.repeat_interleave(torch.tensor([len(j) for j in junk]))
        ranks = _relevant_ranks(_remove(sim, junk_rows, torch.cat(junk)), *_pad(positives))
        n_pos = torch.tensor([len(p) for p in positives], dtype=torch.float64)  # 0 -> NaN below
        ap[rows] = _trapezoid_ap(ranks - 1, n_pos)
        precision[rows] = _revisited_precision(ranks, ks).masked_fill(n_pos.unsqueeze(1) == 0, float("nan"))
    return ap, precision
