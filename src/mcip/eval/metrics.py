"""Evaluation metrics as pure tensor functions, computed in query chunks so memory stays bounded.

Conventions shared by every function here:
- embeddings are L2-normalised (B, D) rows; similarity is their dot product (cosine), computed in float32 on
  the CPU (inputs on another device are copied);
- a ranking sorts the database by similarity, descending, ties broken by database index, ascending, so every
  result is deterministic;
- return values are fractions in [0, 1]; percentages are the caller's business (``mcip.eval.protocols``).

Exact ranks are computed without sorting whole rows (``mcip.eval.ranking`` explains how); peak memory
is bounded by ``MAX_CHUNK_ELEMENTS`` similarities whatever the database size. The revisited Oxford/Paris
AP (:func:`revisited_average_precision`) lives in ``mcip.eval.revisited`` with its ground-truth handling,
and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mcip.errors import InputError
from mcip.eval.ranking import (  # noqa: F401 - MAX_CHUNK_ELEMENTS is part of this module's API
    MAX_CHUNK_ELEMENTS,
    _best_relevant,
    _buffer,
    _check_embeddings,
    _check_index,
    _check_ks,
    _check_pair,
    _chunks,
    _Groups,
    _order_keys,
    _relevant_ranks,
    _remove,
    _same_label_chunk,
    _similarities,
)
from mcip.eval.revisited import revisited_average_precision  # noqa: F401 - one of this module's metrics


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
    Ties: by database index, ascending.

    Args:
        embeddings: (N, D) L2-normalised.
        labels: (N,) integer labels.

    Returns:
        (N,) float64 AP per query; mAP is ``.nanmean()``.
    """
    emb, _ = _check_pair(embeddings, embeddings)
    labels = _check_index(labels, len(emb), "labels")
    groups, buffer = _Groups(labels), _buffer(len(emb), len(emb), chunk_size)
    out = torch.empty(len(emb), dtype=torch.float64)
    for rows in _chunks(len(emb), len(emb), chunk_size):
        ranks = _relevant_ranks(*_same_label_chunk(emb, labels, rows, include_self, groups, buffer))
        found = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64)  # relevant items at or above
        out[rows] = (found / ranks).sum(1) / torch.isfinite(ranks).sum(1)  # 0/0 -> NaN: no relevant item
    return out


def query_gallery_average_precision(
    queries: Tensor,
    query_labels: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Per-query average precision and hit@1 of queries against a SEPARATE gallery (seen-class
    validation: held-out photos of known classes query the training images).

    Definition: query i ranks all G gallery items by cosine; relevant = gallery items with
    ``gallery_labels == query_labels[i]``; ``AP_i = (1 / R_i) * sum over relevant ranks r of
    precision@r``; ``hit1_i`` = 1 when the top item is relevant. A query with no relevant gallery item
    gets AP = NaN and hit1 = NaN (excluded by ``nanmean``). Ties: by gallery index, ascending.

    Args:
        queries: (Q, D) and gallery: (G, D), L2-normalised; labels: (Q,) and (G,) integers.

    Returns:
        ``(ap (Q,), hit1 (Q,))`` float64.
    """
    q, g = _check_pair(queries, gallery)
    q_labels = _check_index(query_labels, len(q), "query_labels")
    g_labels = _check_index(gallery_labels, len(g), "gallery_labels")
    ap = torch.empty(len(q), dtype=torch.float64)
    hit1 = torch.empty(len(q), dtype=torch.float64)
    ranks = torch.arange(1, len(g) + 1, dtype=torch.float64)
    step = max(1, min(chunk_size, (1 << 24) // max(len(g), 1)))  # a (step, G) float64 block <= 128 MB
    for start in range(0, len(q), step):
        rows = slice(start, start + step)
        order = torch.sort(q[rows] @ g.T, dim=1, descending=True, stable=True).indices
        rel = (g_labels[order] == q_labels[rows, None]).double()
        n_rel = rel.sum(1)
        ap[rows] = (rel * rel.cumsum(1) / ranks).sum(1) / n_rel  # 0/0 -> NaN
        hit1[rows] = torch.where(n_rel > 0, rel[:, 0], torch.nan)
    return ap, hit1


def recall_at_k(
    embeddings: Tensor,
    labels: Tensor,
    ks: Sequence[int] = (1, 2, 4, 8),
    include_self: bool = False,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """All-vs-all Recall@k (the CUB-200-2011 protocol with the default ``include_self=False``).

    Definition: query i ranks all other items (itself removed unless ``include_self``); it hits at k if
    ANY of its top k items has ``labels[i]``. Recall@k = hits / N over ALL queries: a query whose label
    has no other item counts as a miss. Ties: by database index, ascending.

    Args:
        embeddings: (N, D) L2-normalised.
        labels: (N,) integer labels.

    Returns:
        ``{k: fraction of queries that hit at k}``.
    """
    ks = _check_ks(ks)
    emb, _ = _check_pair(embeddings, embeddings)
    labels = _check_index(labels, len(emb), "labels")
    groups, buffer = _Groups(labels), _buffer(len(emb), len(emb), chunk_size)
    best = torch.empty(len(emb), dtype=torch.float64)
    for rows in _chunks(len(emb), len(emb), chunk_size):
        sim, idx, valid = _same_label_chunk(emb, labels, rows, include_self, groups, buffer)
        best[rows] = _relevant_ranks(sim, *_best_relevant(sim, idx, valid))[:, 0]
    return {k: float((best <= k).double().mean()) for k in ks}


# ---------------------------------------------------------------- classification


def _top_k(sim: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(c, k) similarities and columns of the k best-ranked columns (ties by column, ascending)."""
    vals, cols = sim.topk(k, dim=1)
    ambiguous = (
        ((sim >= vals[:, -1:]).sum(1, dtype=torch.int32) > k).nonzero().squeeze(1)
    )  # a tie straddles the cut
    if len(ambiguous):
        keys = _order_keys(sim[ambiguous], torch.arange(sim.shape[1]))
        cols[ambiguous] = keys.topk(k, dim=1).indices
        vals[ambiguous] = sim[ambiguous].gather(1, cols[ambiguous])
    return vals, cols


def knn_classify(
    index_emb: Tensor,
    index_labels: Tensor,
    query_emb: Tensor,
    num_classes: int,
    k: int = 21,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Weighted k-NN class scores (the DINO / SPEC section 6 protocol: k = 21, temperature = 0.1).

    Definition: each query's k nearest index items by cosine similarity s (ties by index, ascending) vote
    for their own label with weight ``exp(s / temperature)``; a class's score is the sum of its votes
    (0 for classes without a neighbour). An index smaller than k votes with all its N items.
    Predict with ``topk_accuracy`` / ``argmax``.

    Args:
        index_emb: (N, D) L2-normalised; index_labels: (N,) in [0, num_classes); query_emb: (Q, D).

    Returns:
        (Q, num_classes) float64 scores.
    """
    queries, index = _check_pair(query_emb, index_emb)
    index_labels = _check_index(index_labels, len(index), "index_labels", upper=num_classes)
    if k < 1 or temperature <= 0:
        raise InputError(f"Need k >= 1 and temperature > 0, got k={k}, temperature={temperature}.")
    k = min(k, len(index))
    scores = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    buffer = _buffer(len(queries), len(index), chunk_size)
    for rows in _chunks(len(queries), len(index), chunk_size):
        vals, cols = _top_k(_similarities(queries[rows], index, buffer), k)
        scores[rows] = scores[rows].scatter_add_(1, index_labels[cols], (vals.double() / temperature).exp())
    return scores


def topk_accuracy(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy: the fraction of rows whose label is among the k highest-scoring classes.

    Definition: the label's rank is ``#{classes with a higher score} + #{classes with an equal score and a
    smaller index}`` (ties by class index, ascending); the row is correct at k if that rank is < k.
    With k >= C every row is correct.

    Args:
        scores: (Q, C) class scores; labels: (Q,) in [0, C).
    """
    ks = _check_ks(ks)
    if scores.ndim != 2:
        raise InputError(f"scores must be (Q, C), got {tuple(scores.shape)}.")
    labels = _check_index(labels, len(scores), "labels", upper=scores.shape[1])
    if not torch.isfinite(scores).all():
        raise InputError("scores contain NaN or Inf values.")
    classes = torch.arange(scores.shape[1])
    rank = torch.empty(len(scores), dtype=torch.long)
    for rows in _chunks(len(scores), scores.shape[1], 1 << 16):
        own = scores[rows].gather(1, labels[rows].unsqueeze(1))
        ahead = (scores[rows] > own) | ((scores[rows] == own) & (classes < labels[rows].unsqueeze(1)))
        rank[rows] = ahead.sum(1)
    return {k: float((rank < k).double().mean()) for k in ks}


def zeroshot_scores(image_emb: Tensor, class_emb: Tensor) -> Tensor:
    """(N, C) float32 cosine similarity of each L2-normalised image (N, D) to each class embedding (C, D).

    The class embeddings come from ``mcip.eval.protocols.zeroshot_classifier``; score with ``topk_accuracy``.
    """
    images, classes = _check_pair(image_emb, class_emb)
    return images @ classes.T


# ---------------------------------------------------------------- text-image retrieval


def text_to_image_recall(
    text_emb: Tensor,
    image_emb: Tensor,
    text_to_image: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    image_labels: Tensor | None = None,
) -> dict[int, float]:
    """Text-to-image Recall@k: the fraction of text queries whose own image is among the top k images.

    Definition: each caption ranks all N images (ties by image index, ascending); it hits at k if its
    image's rank is <= k. Every caption is a query, so an image with five captions counts five times.
    With ``image_labels`` a caption's relevant images are all images sharing its image's label (several
    drawings of one emoji, several photos of one product): it hits at k if the best-ranked of them has
    rank <= k.

    Args:
        text_emb: (T, D) L2-normalised caption embeddings (several captions may share an image).
        image_emb: (N, D) L2-normalised image embeddings.
        text_to_image: (T,) index of each caption's image row in ``image_emb``.
        image_labels: optional (N,) integer label per image.
    """
    ks = _check_ks(ks)
    texts, images = _check_pair(text_emb, image_emb)
    target = _check_index(text_to_image, len(texts), "text_to_image", upper=len(images))
    groups = None
    if image_labels is not None:
        image_labels = _check_index(image_labels, len(images), "image_labels")
        groups = _Groups(image_labels)
    rank = torch.empty(len(texts), dtype=torch.float64)
    buffer = _buffer(len(texts), len(images), chunk_size)
    for rows in _chunks(len(texts), len(images), chunk_size):
        sim = _similarities(texts[rows], images, buffer)
        if groups is None:
            idx = target[rows].unsqueeze(1)
            rank[rows] = _relevant_ranks(sim, idx, torch.ones_like(idx, dtype=torch.bool))[:, 0]
        else:
            idx, valid = groups.members(image_labels[target[rows]])
            rank[rows] = _relevant_ranks(sim, *_best_relevant(sim, idx, valid))[:, 0]
    return {k: float((rank <= k).double().mean()) for k in ks}


def image_to_text_recall(
    image_emb: Tensor,
    text_emb: Tensor,
    caption_image: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    image_labels: Tensor | None = None,
) -> dict[int, float]:
    """Image-to-text Recall@k: the fraction of images with at least one of their own captions in the top k.

    Definition: each image that has captions ranks all T captions (ties by caption index, ascending); it
    hits at k if its best-ranked own caption has rank <= k. Images without any caption are not queries
    (they stay in the database of ``text_to_image_recall`` as distractors). With ``image_labels`` an
    image's own captions are those of every image sharing its label, and every image whose label has a
    caption is a query.

    Args:
        image_emb: (N, D) L2-normalised; text_emb: (T, D) L2-normalised;
        caption_image: (T,) image row of each caption; image_labels: optional (N,) integer labels.
    """
    ks = _check_ks(ks)
    images, texts = _check_pair(image_emb, text_emb)
    owner = _check_index(caption_image, len(texts), "caption_image", upper=len(images))
    if image_labels is None:
        queries = torch.unique(owner)
        groups, query_keys = _Groups(owner), queries
    else:
        image_labels = _check_index(image_labels, len(images), "image_labels")
        caption_labels = image_labels[owner]
        queries = torch.isin(image_labels, caption_labels).nonzero().squeeze(1)
        groups, query_keys = _Groups(caption_labels), image_labels[queries]
    rank = torch.empty(len(queries), dtype=torch.float64)
    buffer = _buffer(len(queries), len(texts), chunk_size)
    for rows in _chunks(len(queries), len(texts), chunk_size):
        sim = _similarities(images[queries[rows]], texts, buffer)
        rank[rows] = _relevant_ranks(sim, *_best_relevant(sim, *groups.members(query_keys[rows])))[:, 0]
    return {k: float((rank <= k).double().mean()) for k in ks}
