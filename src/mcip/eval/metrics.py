"""Evaluation metrics as pure tensor functions, computed in query chunks so memory stays bounded.

Conventions shared by every function here:
- embeddings are L2-normalised (B, D) rows; similarity is their dot product (cosine), computed in float32 on
  the CPU (inputs on another device are copied);
- a ranking sorts the database by similarity, descending, ties broken by database index, ascending, so every
  result is deterministic;
- return values are fractions in [0, 1]; percentages are the caller's business (``mcip.eval.protocols``).

Exact ranks are computed without sorting whole rows (``mcip.eval.ranking`` explains how); peak memory
is bounded by ``MAX_CHUNK_ELEMENTS`` similarities whatever the database size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

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

_KS_REVISITED = (1, 5, 10)


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
