"""Retrieval metrics as pure tensor functions, computed in query chunks so memory stays bounded.

Conventions shared by every function here:
- embeddings are L2-normalised (B, D) rows; similarity is the dot product (cosine);
- rankings sort by similarity, descending; ties are broken by the database index, ascending, so
  results are deterministic;
- percentages are the caller's business: these return fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mcip.errors import InputError


def _check_pair(queries: Tensor, database: Tensor) -> None:
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise InputError(
            f"Expected (Q, D) queries and (N, D) database embeddings of the same width, got "
            f"{tuple(queries.shape)} and {tuple(database.shape)}."
        )


def _ranking(queries: Tensor, database: Tensor) -> Tensor:
    """(Q, N) database indices per query: similarity descending, ties by index ascending."""
    sim = queries.float() @ database.float().T
    return torch.sort(-sim, dim=1, stable=True).indices


def retrieval_average_precision(
    embeddings: Tensor, labels: Tensor, include_self: bool = True, chunk_size: int = 1024
) -> Tensor:
    """Per-query average precision, every item querying all items (all-vs-all image retrieval).

    Definition (GPR1200 / INSTRE protocol when ``include_self=True``): query i ranks all N items,
    ITSELF INCLUDED (it counts as a relevant hit); the relevant items are those with ``labels == labels[i]``.
    ``AP_i = (1 / R_i) * sum over relevant ranks r of precision@r``, where ``precision@r`` is the
    fraction of relevant items among the top r and R_i the number of relevant items.
    With ``include_self=False`` the query is removed from the ranking and from its relevant set; a
    query without any other relevant item gets AP = NaN (excluded by ``nanmean``).

    Args:
        embeddings: (N, D) L2-normalised.
        labels: (N,) integer labels.

    Returns:
        (N,) float64 AP per query; mAP is ``.nanmean()``.
    """
    _check_pair(embeddings, embeddings)
    if labels.shape != (embeddings.shape[0],):
        raise InputError(f"labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}.")
    n = embeddings.shape[0]
    out = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, chunk_size):
        q = torch.arange(start, min(start + chunk_size, n))
        order = _ranking(embeddings[q], embeddings)
        relevant = labels[order] == labels[q].unsqueeze(1)
        if not include_self:
            keep = order != q.unsqueeze(1)
            relevant = relevant[keep].view(len(q), n - 1)
        hits = relevant.to(torch.float64)
        ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
        precision = hits.cumsum(1) / ranks
        n_rel = hits.sum(1)
        out[q] = (precision * hits).sum(1) / n_rel  # 0/0 -> NaN for queries without relevant items
    return out


def text_to_image_recall(
    text_emb: Tensor,
    image_emb: Tensor,
    text_to_image: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Text-to-image Recall@k: the fraction of text queries whose own image is among the top k images.

    Args:
        text_emb: (T, D) L2-normalised caption embeddings (several captions may share an image).
        image_emb: (N, D) L2-normalised image embeddings.
        text_to_image: (T,) index of each caption's image row in ``image_emb``.
    """
    _check_pair(text_emb, image_emb)
    if text_to_image.shape != (text_emb.shape[0],):
        raise InputError(f"text_to_image must be ({text_emb.shape[0]},), got {tuple(text_to_image.shape)}.")
    rank_of_target = torch.empty(text_emb.shape[0], dtype=torch.long)
    for start in range(0, text_emb.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        order = _ranking(text_emb[rows], image_emb)
        rank_of_target[rows] = (order == text_to_image[rows].unsqueeze(1)).float().argmax(1)
    return {k: float((rank_of_target < k).double().mean()) for k in ks}
