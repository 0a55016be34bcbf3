"""Revisited Oxford/Paris AP and mP@k against a literal numpy re-implementation of revisitop's
``compute_ap`` / ``compute_map`` (evaluate.py of Radenović et al. 2018), written here from its published
definition: rank with an argsort of -similarity, find positives and junk with ``isin``, shift every
positive's position down by the junk ranked before it, trapezoidal AP, precision at k."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mcip.errors import InputError
from mcip.eval.protocols import evaluate_revisited
from mcip.eval.revisited import revisited_average_precision


def revisitop_compute_ap(ranks, nres):
    ap = 0.0
    recall_step = 1.0 / nres
    for j in np.arange(len(ranks)):
        rank = ranks[j]
        precision_0 = 1.0 if rank == 0 else float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def revisitop_compute_map(ranks, gnd, kappas):
    """``ranks``: (database, queries) ranked database indices, one column per query."""
    nq = len(gnd)
    aps = np.zeros(nq)
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = np.array(gnd[i]["ok"])
        if qgnd.shape[0] == 0:
            aps[i] = float("nan")
            prs[i, :] = float("nan")
            nempty += 1
            continue
        qgndj = np.array(gnd[i]["junk"])
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        aps[i] = revisitop_compute_ap(pos, len(qgnd))
        pos += 1
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
    mean_ap = np.nansum(aps) / (nq - nempty)
    mean_pr = np.nansum(prs, axis=0) / (nq - nempty)
    return mean_ap, aps, mean_pr, prs


def setting_gnd(gnd, setting):
    """revisitop's example script: the positives and junk of each protocol setting."""
    ok = {"easy": ("easy",), "medium": ("easy", "hard"), "hard": ("hard",)}[setting]
    junk = {"easy": ("junk", "hard"), "medium": ("junk",), "hard": ("junk", "easy")}[setting]
    return [
        {"ok": np.concatenate([g[key] for key in ok]), "junk": np.concatenate([g[key] for key in junk])}
        for g in gnd
    ]


def random_case(seed, n_db=60, n_q=9, d=4):
    """Small-integer embeddings (exact ties) and a disjoint easy/hard/junk split per query, some empty."""
    rng = np.random.default_rng(seed)
    db = rng.integers(-2, 3, (n_db, d)).astype(np.float32)
    queries = rng.integers(-2, 3, (n_q, d)).astype(np.float32)
    gnd = []
    for i in range(n_q):
        picked = rng.permutation(n_db)[: rng.integers(0, 20)]
        cut = np.sort(rng.integers(0, len(picked) + 1, 2))
        easy, hard, junk = picked[: cut[0]], picked[cut[0] : cut[1]], picked[cut[1] :]
        if i == 0:
            easy, hard = easy[:0], hard[:0]  # no positives in any setting
        gnd.append({"easy": easy, "hard": hard, "junk": junk, "bbx": [0, 0, 1, 1]})
    return queries, db, gnd


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("setting", ["easy", "medium", "hard"])
def test_equals_revisitop(seed, setting):
    queries, db, gnd = random_case(seed)
    sim = db @ queries.T  # (database, queries), as revisitop's example script
    ranks = np.argsort(-sim, axis=0, kind="stable")  # stable: ties by database index, like mcip
    mean_ap, aps, mean_pr, prs = revisitop_compute_map(ranks, setting_gnd(gnd, setting), [1, 5, 10])
    ap, precision = revisited_average_precision(torch.from_numpy(queries), torch.from_numpy(db), gnd, setting)
    np.testing.assert_allclose(ap.numpy(), aps, equal_nan=True)
    np.testing.assert_allclose(precision.numpy(), prs, equal_nan=True)
    assert math.isnan(ap[0])
    assert float(ap.nanmean()) == pytest.approx(mean_ap)
    np.testing.assert_allclose(precision.nanmean(0).numpy(), mean_pr)


def test_hand_computed():
    # database on a line of decreasing similarity to the query: ranking 0, 1, 2, 3, 4, 5
    db = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.5, 0.5]])
    query = torch.tensor([[1.0, 0.0]])
    gnd = [{"easy": [2], "hard": [4], "junk": [1]}]
    # medium: positives 2, 4; junk 1 removed -> ranking 0, 2, 3, 4, 5: positives at 0-based ranks 1, 3
    # j=0 at 1: (0/1 + 1/2) / 2 / 2 = 0.125; j=1 at 3: (1/3 + 2/4) / 2 / 2 = 5/24
    ap, precision = revisited_average_precision(query, db, gnd, "medium")
    assert ap.item() == pytest.approx(0.125 + 5 / 24)
    # pos (1-based) = 2, 4: P@1 = #(pos<=1)/1 = 0; P@5: kq = min(4, 5) = 4 -> 2/4; P@10 the same
    assert precision[0].tolist() == pytest.approx([0.0, 0.5, 0.5])
    # hard: positive 4; junk 1 and 2 removed -> ranking 0, 3, 4, 5: rank 2 -> (0/2 + 1/3) / 2
    assert revisited_average_precision(query, db, gnd, "hard")[0].item() == pytest.approx(1 / 6)


def test_protocol_keys_and_empty_queries():
    queries, db, gnd = random_case(1)
    out = evaluate_revisited(torch.from_numpy(queries), torch.from_numpy(db), gnd)
    assert set(out) == {
        f"{s}_{m}" for s in ("easy", "medium", "hard") for m in ("map", "mp@1", "mp@5", "mp@10")
    }
    ap, _ = revisited_average_precision(torch.from_numpy(queries), torch.from_numpy(db), gnd, "medium")
    assert out["medium_map"] == pytest.approx(100 * float(ap.nanmean()))
    assert all(0 <= v <= 100 for v in out.values())


def test_bad_ground_truth():
    q, db = torch.eye(3)[:1], torch.eye(3)
    with pytest.raises(InputError, match="at most once"):
        revisited_average_precision(q, db, [{"easy": [0], "hard": [], "junk": [0]}])
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        revisited_average_precision(q, db, [{"easy": [3], "hard": [], "junk": []}])
    with pytest.raises(InputError, match="'easy', 'hard' and 'junk'"):
        revisited_average_precision(q, db, [{"easy": [0]}])
    with pytest.raises(InputError, match="match one to one"):
        revisited_average_precision(q, db, [])
    with pytest.raises(InputError, match="setting"):
        revisited_average_precision(q, db, [{"easy": [0], "hard": [], "junk": []}], "medium-hard")
