"""Metrics against hand-computed rankings and naive per-query loops."""

from __future__ import annotations

import math

import pytest
import torch

from mcip.errors import InputError
from mcip.eval.metrics import retrieval_average_precision, text_to_image_recall


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


@pytest.mark.parametrize("include_self", [True, False])
def test_against_naive_loop_with_ties_and_chunks(include_self):
    g = torch.Generator().manual_seed(0)
    # small integers: every dot product is exact in float32, so ties are real ties in both implementations
    emb = torch.randint(-2, 3, (37, 5), generator=g).float()
    labels = torch.randint(0, 6, (37,), generator=g)
    labels[36] = 99  # a singleton: NaN when self is excluded
    got = retrieval_average_precision(emb, labels, include_self=include_self, chunk_size=8)
    ref = naive_ap(emb, labels.tolist(), include_self)
    torch.testing.assert_close(got, ref, equal_nan=True)
    assert math.isnan(got[36]) != include_self


def test_t2i_recall_against_naive_loop():
    g = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(20, 8, generator=g), dim=1)
    owner = torch.randint(0, 20, (50,), generator=g)
    texts = torch.nn.functional.normalize(images[owner] + 0.8 * torch.randn(50, 8, generator=g), dim=1)
    got = text_to_image_recall(texts, images, owner, ks=(1, 5), chunk_size=7)
    for k in (1, 5):
        hits = 0
        for t in range(50):
            order = sorted(range(20), key=lambda j: (-float(texts[t] @ images[j]), j))
            hits += int(owner[t]) in order[:k]
        assert got[k] == pytest.approx(hits / 50)


def test_shape_errors():
    with pytest.raises(InputError, match="same width"):
        text_to_image_recall(torch.zeros(3, 2), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="labels must be"):
        retrieval_average_precision(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
