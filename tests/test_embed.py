"""encode helpers: the leave-one-out 1-NN accuracy against a per-query loop."""

from __future__ import annotations

import numpy as np

from mcip.embed import leave_one_out_nn_accuracy


def test_leave_one_out_matches_naive_loop():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = [str(i % 3) for i in range(40)]
    hits = 0
    for i in range(40):
        best, best_j = -np.inf, -1
        for j in range(40):
            if j != i and float(emb[i] @ emb[j]) > best:
                best, best_j = float(emb[i] @ emb[j]), j
        hits += labels[best_j] == labels[i]
    assert leave_one_out_nn_accuracy(emb, labels) == hits / 40


def test_single_label_gives_none():
    assert leave_one_out_nn_accuracy(np.eye(3, dtype=np.float32), ["a", "a", "a"]) is None
