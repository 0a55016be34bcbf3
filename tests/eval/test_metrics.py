"""Metrics against hand-computed rankings and naive per-query loops.

Random cases use small-integer embeddings: every dot product is exact in float32, so ties are real ties
in both implementations and the tie rule (database index ascending) is what is tested.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mcip.eval.ranking as R
from mcip.errors import InputError
from mcip.eval.metrics import (
    image_to_text_recall,
    knn_classify,
    recall_at_k,
    retrieval_average_precision,
    text_to_image_recall,
    topk_accuracy,
    zeroshot_scores,
)


def int_clusters(n: int, d: int, n_classes: int, seed: int, spread: int = 1):
    """(n, d) small-integer embeddings around n_classes integer centres, and (n,) labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=g)
    centres = torch.randint(-3, 4, (n_classes, d), generator=g)
    emb = centres[labels] + torch.randint(-spread, spread + 1, (n, d), generator=g)
    return emb.float(), labels


def order(sim_row, skip=None):
    """Reference ranking: similarity descending, ties by index ascending."""
    items = [j for j in range(len(sim_row)) if j != skip]
    return sorted(items, key=lambda j: (-float(sim_row[j]), j))


def naive_ap(emb, labels, include_self):
    out = []
    n = len(labels)
    for i in range(n):
        items = [j for j in range(n) if include_self or j != i]
        items.sort(key=lambda j: (-float(emb[i] @ emb[j]), j))
        relevant = [labels[j] == labels[i] for j in items]
        hits, total = 0, 0.0
        for r, rel in enumerate(relevant, start=1):
            if rel:
                hits += 1
                total += hits / r
        out.append(total / hits if hits else math.nan)
    return torch.tensor(out, dtype=torch.float64)


def lexsort_ap(emb, labels):
    """Per-query AP (self included) from a full numpy ranking: a vectorised reference for larger N."""
    sim = (emb @ emb.T).numpy()
    lab = labels.numpy()
    out = []
    for i in range(len(lab)):
        ranking = np.lexsort((np.arange(len(lab)), -sim[i]))
        hits = lab[ranking] == lab[i]
        precision = np.cumsum(hits) / np.arange(1, len(lab) + 1)
        out.append((precision * hits).sum() / hits.sum())
    return torch.tensor(out, dtype=torch.float64)


# ---------------------------------------------------------------- the exact-rank core


def test_order_keys_follow_similarity_then_index():
    sim = torch.tensor([0.5, -0.0, 0.0, -1.0, 0.5, float("-inf"), 1e-30, -1e-30])
    keys = R._order_keys(sim, torch.arange(len(sim)))
    expected = sorted(range(len(sim)), key=lambda j: (-float(sim[j]), j))  # -0.0 == 0.0: a tie
    assert torch.argsort(keys, descending=True).tolist() == expected


@pytest.mark.parametrize("key_bits", [63, 32 + 11 + 2])
def test_relevant_ranks_at_every_depth(monkeypatch, key_bits):
    """Rows whose relevant items sit near the top, deeper and everywhere (every column a candidate), with
    ties and removed (-inf) columns, against a brute-force count; also with keys too narrow for all rows
    at once (ranked in halves)."""
    monkeypatch.setattr(R, "_KEY_BITS", key_bits)
    g = torch.Generator().manual_seed(3)
    c, n = 30, 1100
    sim = torch.randint(0, 60, (c, n), generator=g).float()
    sim[torch.rand(c, n, generator=g) < 0.05] = float("-inf")
    idx = torch.zeros(c, 6, dtype=torch.long)
    valid = torch.ones(c, 6, dtype=torch.bool)
    for i in range(c):
        ranking = [j for j in order(sim[i]) if math.isfinite(sim[i, j])]
        depth = (10, 200, len(ranking))[i % 3]
        idx[i] = torch.tensor(ranking[:depth])[torch.randperm(depth, generator=g)[:6]]
        valid[i, 6 - i % 4 :] = False  # 6, 5, 4, 3 relevant items; row 0 keeps all
    valid[7] = False  # a row without relevant items
    got = R._relevant_ranks(sim.clone(), idx, valid)
    assert torch.equal(R._relevant_ranks(sim.T.contiguous().T, idx, valid), got)  # a strided matrix
    for i in range(c):
        s = sim[i]
        ranks = sorted(
            1 + int(((s > s[r]) | ((s == s[r]) & (torch.arange(n) < r))).sum())
            for r in idx[i][valid[i]].tolist()
        )
        assert got[i][: len(ranks)].tolist() == ranks
        assert torch.isinf(got[i][len(ranks) :]).all()


# ---------------------------------------------------------------- all-vs-all AP


def test_hand_computed_ranking():
    # 1-D embeddings on a circle: query 0's ranking is 0 (self), 1, 2, 3 by angle.
    angles = torch.tensor([0.0, 0.1, 0.5, 1.0])
    emb = torch.stack([angles.cos(), angles.sin()], 1)
    labels = torch.tensor([0, 1, 0, 1])
    ap = retrieval_average_precision(emb, labels)
    # query 0: relevant at ranks 1 (self) and 3 -> (1/1 + 2/3) / 2
    assert ap[0].item() == pytest.approx((1 + 2 / 3) / 2)
    ap_ex = retrieval_average_precision(emb, labels, include_self=False)
    # without self: ranking 1, 2, 3; relevant item 2 at rank 2 -> 1/2
    assert ap_ex[0].item() == pytest.approx(0.5)


def test_ties_go_to_the_smaller_index():
    # items 1 and 2 are equally similar to query 0; item 1 (other class) ranks first.
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 0])
    ap = retrieval_average_precision(emb, labels)
    # query 0 ranking: 0, 3 (sim 1), then 1, 2 (sim 0, tie by index): relevant at 1, 2, 4
    assert ap[0].item() == pytest.approx((1 + 1 + 3 / 4) / 3)


@pytest.mark.parametrize("include_self", [True, False])
def test_against_naive_loop_with_ties_and_chunks(include_self):
    g = torch.Generator().manual_seed(0)
    emb = torch.randint(-2, 3, (37, 5), generator=g).float()
    labels = torch.randint(0, 6, (37,), generator=g)
    labels[36] = 99  # a singleton: NaN when self is excluded
    got = retrieval_average_precision(emb, labels, include_self=include_self, chunk_size=8)
    ref = naive_ap(emb, labels.tolist(), include_self)
    torch.testing.assert_close(got, ref, equal_nan=True)
    assert math.isnan(got[36]) != include_self


def test_clustered_against_full_ranking_reference(monkeypatch):
    emb, labels = int_clusters(1100, 6, 40, seed=1)
    ref = lexsort_ap(emb, labels)
    torch.testing.assert_close(retrieval_average_precision(emb, labels, chunk_size=300), ref)
    monkeypatch.setattr(R, "MAX_CHUNK_ELEMENTS", 3 * 1100 + 5)  # 3 query rows per chunk
    torch.testing.assert_close(retrieval_average_precision(emb, labels), ref)


def test_chunks_respect_the_element_budget(monkeypatch):
    monkeypatch.setattr(R, "MAX_CHUNK_ELEMENTS", 1000)
    chunks = list(R._chunks(1050, 300, chunk_size=1024))
    assert {c.stop - c.start for c in chunks[:-1]} == {3}
    assert chunks[-1].stop == 1050
    assert len(list(R._chunks(5, 10**6, chunk_size=1024))) == 5  # one row at a time, never zero


# ---------------------------------------------------------------- Recall@k


def naive_recall(emb, labels, ks, include_self):
    hits = dict.fromkeys(ks, 0)
    for i in range(len(labels)):
        ranking = order(emb @ emb[i], skip=None if include_self else i)
        for k in ks:
            hits[k] += any(labels[j] == labels[i] for j in ranking[:k])
    return {k: v / len(labels) for k, v in hits.items()}


def test_recall_hand_computed():
    angles = torch.tensor([0.0, 0.1, 0.5, 1.0, 3.0])
    emb = torch.stack([angles.cos(), angles.sin()], 1)
    labels = torch.tensor([0, 1, 0, 1, 2])  # item 4 is alone in its class: always a miss
    # nearest others: 0 -> 1 (miss), 1 -> 0 (miss), 2 -> 1 (miss), 3 -> 2 (miss), 4 -> 3 (miss)
    # top 2: 0 -> 1, 2 (hit); 1 -> 0, 2 (miss); 2 -> 1, 0 (hit); 3 -> 2, 1 (hit); 4 -> miss
    got = recall_at_k(emb, labels, ks=(1, 2))
    assert got == {1: 0.0, 2: pytest.approx(3 / 5)}
    assert recall_at_k(emb, labels, ks=(1,), include_self=True) == {1: 1.0}


@pytest.mark.parametrize("include_self", [True, False])
def test_recall_against_naive_loop(include_self):
    emb, labels = int_clusters(61, 4, 7, seed=2, spread=2)
    labels[0] = 50  # a singleton
    got = recall_at_k(emb, labels, ks=(1, 2, 4, 8), include_self=include_self, chunk_size=13)
    ref = naive_recall(emb, labels.tolist(), (1, 2, 4, 8), include_self)
    assert got == pytest.approx(ref)


# ---------------------------------------------------------------- k-NN and top-k accuracy


def naive_knn(index, index_labels, queries, num_classes, k, t):
    scores = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    for q in range(len(queries)):
        sims = index @ queries[q]
        for j in order(sims)[:k]:
            scores[q, index_labels[j]] += math.exp(float(sims[j]) / t)
    return scores


def test_knn_hand_computed():
    index = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    scores = knn_classify(index, labels, torch.tensor([[1.0, 0.0]]), num_classes=3, k=2, temperature=0.5)
    # neighbours: item 0 (sim 1) votes e^2 for class 0; item 1 (sim 0.6) votes e^1.2 for class 1
    torch.testing.assert_close(
        scores, torch.tensor([[math.exp(2.0), math.exp(1.2), 0.0]], dtype=torch.float64)
    )


def test_knn_tie_at_the_cut_takes_the_smaller_index():
    index = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 2, 1, 1])
    scores = knn_classify(index, labels, torch.tensor([[1.0, 0.0]]), num_classes=3, k=2, temperature=1.0)
    assert scores[0].tolist() == pytest.approx([math.e, 0.0, 1.0])  # item 1 (class 2), not 2 or 3


def test_knn_with_fewer_index_items_than_k_uses_them_all():
    index, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    scores = knn_classify(index, labels, torch.tensor([[1.0, 0.0]]), num_classes=2, k=21, temperature=1.0)
    assert scores[0].tolist() == pytest.approx([math.e, 1.0])


def test_knn_against_naive_loop():
    index, index_labels = int_clusters(90, 4, 9, seed=4, spread=2)
    queries, _ = int_clusters(23, 4, 9, seed=5, spread=2)
    got = knn_classify(index / 4, index_labels, queries / 4, 9, k=21, temperature=0.1, chunk_size=7)
    ref = naive_knn(index / 4, index_labels.tolist(), queries / 4, 9, 21, 0.1)
    torch.testing.assert_close(got, ref)


def test_topk_accuracy_hand_computed_with_ties():
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 0.0, 0.0]])
    labels = torch.tensor([1, 1, 2])
    # row 0: class 0 ties with 1 and has the smaller index -> rank 1; row 1: rank 0; row 2: rank 2
    assert topk_accuracy(scores, labels, ks=(1, 2, 3)) == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})


def test_topk_accuracy_against_naive_loop():
    g = torch.Generator().manual_seed(6)
    scores = torch.randint(0, 4, (50, 7), generator=g).float()
    labels = torch.randint(0, 7, (50,), generator=g)
    for k in (1, 3, 5):
        hits = sum(int(labels[q]) in order(scores[q])[:k] for q in range(50))
        assert topk_accuracy(scores, labels, ks=(k,))[k] == pytest.approx(hits / 50)


def test_zeroshot_scores_are_cosine():
    g = torch.Generator().manual_seed(7)
    images = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    classes = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1)
    torch.testing.assert_close(zeroshot_scores(images, classes), images @ classes.T)


# ---------------------------------------------------------------- text <-> image


def test_t2i_recall_against_naive_loop():
    g = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(20, 8, generator=g), dim=1)
    owner = torch.randint(0, 20, (50,), generator=g)
    texts = torch.nn.functional.normalize(images[owner] + 0.8 * torch.randn(50, 8, generator=g), dim=1)
    got = text_to_image_recall(texts, images, owner, ks=(1, 5), chunk_size=7)
    for k in (1, 5):
        hits = 0
        for t in range(50):
            ranking = sorted(range(20), key=lambda j: (-float(texts[t] @ images[j]), j))
            hits += int(owner[t]) in ranking[:k]
        assert got[k] == pytest.approx(hits / 50)


def test_i2t_recall_hand_computed():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # image 2 has no caption
    texts = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    owner = torch.tensor([0, 1, 1, 0])
    # image 0 ranks texts 1, 2, 3, 0: own captions 0, 3 -> best rank 3; image 1 ranks 0, 3, 2, 1 -> rank 3
    assert image_to_text_recall(images, texts, owner, ks=(1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 1.0}


def test_i2t_recall_against_naive_loop_with_ties():
    images, _ = int_clusters(25, 3, 25, seed=8, spread=0)
    g = torch.Generator().manual_seed(9)
    owner = torch.randint(0, 22, (60,), generator=g)  # images 22-24 have no captions
    texts = images[owner] + torch.randint(-1, 2, (60, 3), generator=g)
    got = image_to_text_recall(images, texts, owner, ks=(1, 5, 10), chunk_size=4)
    queries = sorted(set(owner.tolist()))
    for k in (1, 5, 10):
        hits = sum(any(owner[t] == i for t in order(texts @ images[i])[:k]) for i in queries)
        assert got[k] == pytest.approx(hits / len(queries))


def test_t2i_and_i2t_with_image_labels_against_naive_loops_with_ties():
    # several images per label (one emoji, three vendors): any image of the caption's label is relevant
    images, _ = int_clusters(30, 3, 30, seed=11, spread=0)
    g = torch.Generator().manual_seed(12)
    labels = torch.randint(0, 9, (30,), generator=g)
    owner = torch.randint(0, 30, (40,), generator=g)
    texts = images[owner] + torch.randint(-1, 2, (40, 3), generator=g)
    t2i = text_to_image_recall(texts, images, owner, ks=(1, 2, 5), chunk_size=6, image_labels=labels)
    i2t = image_to_text_recall(images, texts, owner, ks=(1, 2, 5), chunk_size=6, image_labels=labels)
    caption_labels = labels[owner]
    queries = [i for i in range(30) if int(labels[i]) in set(caption_labels.tolist())]
    for k in (1, 2, 5):
        hits = sum(
            any(labels[j] == caption_labels[t] for j in order(images @ texts[t])[:k]) for t in range(40)
        )
        assert t2i[k] == pytest.approx(hits / 40)
        hits = sum(any(caption_labels[t] == labels[i] for t in order(texts @ images[i])[:k]) for i in queries)
        assert i2t[k] == pytest.approx(hits / len(queries))
    # with one image per label the grouped metric equals the plain one
    plain = text_to_image_recall(texts, images, owner, ks=(1, 5))
    assert text_to_image_recall(texts, images, owner, ks=(1, 5), image_labels=torch.arange(30)) == plain


# ---------------------------------------------------------------- bad input


def test_shape_errors():
    with pytest.raises(InputError, match="same width"):
        text_to_image_recall(torch.zeros(3, 2), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="labels must be"):
        retrieval_average_precision(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(InputError, match="integer"):
        recall_at_k(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(InputError, match="NaN"):
        retrieval_average_precision(torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, dtype=torch.long))
    with pytest.raises(InputError, match="k >= 1"):
        knn_classify(torch.eye(2), torch.tensor([0, 1]), torch.eye(2), num_classes=2, k=0)
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        knn_classify(torch.eye(2), torch.tensor([0, 2]), torch.eye(2), num_classes=2, k=1)
    with pytest.raises(InputError, match="caption_image"):
        image_to_text_recall(torch.eye(2), torch.eye(2), torch.tensor([0, 5]))
    with pytest.raises(InputError, match="ks"):
        topk_accuracy(torch.zeros(2, 3), torch.tensor([0, 1]), ks=(0,))


def _naive_query_gallery(q, ql, g, gl):
    aps, hits = [], []
    for i in range(len(q)):
        sims = [float(q[i] @ g[j]) for j in range(len(g))]
        order = sorted(range(len(g)), key=lambda j: (-sims[j], j))
        rel = [int(gl[j]) == int(ql[i]) for j in order]
        if not any(rel):
            aps.append(float("nan"))
            hits.append(float("nan"))
            continue
        found, total = 0, 0.0
        for r, is_rel in enumerate(rel, start=1):
            if is_rel:
                found += 1
                total += found / r
        aps.append(total / sum(rel))
        hits.append(float(rel[0]))
    return aps, hits


def test_query_gallery_average_precision_matches_a_naive_loop():
    import math

    import torch.nn.functional as F

    from mcip.eval.metrics import query_gallery_average_precision

    torch.manual_seed(3)
    q, g = F.normalize(torch.randn(9, 5), dim=1), F.normalize(torch.randn(23, 5), dim=1)
    g[4] = g[2]  # a tie, broken by gallery index
    ql, gl = torch.tensor([0, 1, 2, 3, 0, 1, 2, 9, 4]), torch.randint(0, 5, (23,))
    ap, hit1 = query_gallery_average_precision(q, ql, g, gl, chunk_size=4)
    ref_ap, ref_hit = _naive_query_gallery(q, ql, g, gl)
    for a, b in zip(ap.tolist(), ref_ap, strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)
    for a, b in zip(hit1.tolist(), ref_hit, strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == b
    assert math.isnan(ap[7])  # label 9 is not in the gallery


def test_query_gallery_perfect_ranking_is_one():
    from mcip.eval.metrics import query_gallery_average_precision

    g = torch.eye(4)
    ap, hit1 = query_gallery_average_precision(g[:2], torch.tensor([0, 1]), g, torch.tensor([0, 1, 2, 3]))
    assert ap.tolist() == [1.0, 1.0] and hit1.tolist() == [1.0, 1.0]
