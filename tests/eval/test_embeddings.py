"""``evaluate_embeddings``: every protocol from .npy files, and the errors that name the missing flag."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mcip.errors import ConfigError, InputError
from mcip.eval import protocols as P
from mcip.eval.embeddings import PROTOCOLS, evaluate_embeddings, load_array, load_gnd


def save(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return load_array(path)


def clustered(n_classes, per_class, dim=8, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    x = rng.standard_normal((n_classes, dim))[labels] + noise * rng.standard_normal((len(labels), dim))
    return (5 * x).astype(np.float32), labels  # not normalised: evaluate_embeddings does it


def test_protocol_list():
    assert PROTOCOLS == ("gpr1200", "instre", "cub", "revisited", "knn", "t2i")


@pytest.mark.parametrize("protocol", ["gpr1200", "instre"])
def test_map_protocols(tmp_path, protocol):
    x, labels = clustered(6, 5)
    out = evaluate_embeddings(protocol, save(tmp_path, "e.npy", x), save(tmp_path, "l.npy", labels))
    expected = P.map_scores(torch.nn.functional.normalize(torch.from_numpy(x), dim=1), labels)
    assert out == pytest.approx(expected)
    assert set(out) == {"map"}


def test_gpr1200_subsets_at_full_size():
    x, labels = clustered(1200, 10, dim=16, noise=0.5)
    out = evaluate_embeddings("gpr1200", x, labels)
    assert list(out) == [
        "map",
        "map/landmarks",
        "map/inat",
        "map/sketch",
        "map/instre",
        "map/sop",
        "map/faces",
    ]
    assert out["map"] == pytest.approx(np.mean([out[k] for k in list(out)[1:]]))


def test_cub(tmp_path):
    x, labels = clustered(5, 4)
    out = evaluate_embeddings("cub", save(tmp_path, "e.npy", x), save(tmp_path, "l.npy", labels))
    assert set(out) == {"recall@1", "recall@2", "recall@4", "recall@8"}
    assert out["recall@1"] <= out["recall@2"] <= out["recall@4"] <= out["recall@8"] == 100.0


def test_revisited(tmp_path):
    db = np.eye(4, dtype=np.float32)
    queries = np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.2]], dtype=np.float32)
    gnd = {
        "imlist": ["a", "b", "c", "d"],
        "qimlist": ["q1", "q2"],
        "gnd": [
            {"easy": np.array([0]), "hard": np.array([1]), "junk": np.array([]), "bbx": [0, 0, 1, 1]},
            {"easy": [], "hard": [3], "junk": [2]},
        ],
    }
    with (tmp_path / "gnd.pkl").open("wb") as f:
        pickle.dump(gnd, f)
    out = evaluate_embeddings(
        "revisited",
        save(tmp_path, "db.npy", db),
        query_embeddings=save(tmp_path, "q.npy", queries),
        gnd=load_gnd(tmp_path / "gnd.pkl"),
    )
    assert out["easy_map"] == 100.0  # query 2 has no easy positive: skipped
    assert out["medium_map"] == 100.0  # query 1: 0, 1 at ranks 0, 1; query 2: junk 2 removed, 3 first
    assert out["hard_map"] == 100.0  # query 1: easy 0 becomes junk, hard 1 ranks first
    assert {"easy_mp@1", "medium_mp@5", "hard_mp@10"} <= set(out)


def test_knn(tmp_path):
    index, labels = clustered(4, 10, seed=1)
    queries, query_labels = clustered(4, 3, seed=1)
    out = evaluate_embeddings(
        "knn",
        save(tmp_path, "i.npy", index),
        save(tmp_path, "il.npy", labels),
        query_embeddings=save(tmp_path, "q.npy", queries),
        query_labels=save(tmp_path, "ql.npy", query_labels),
    )
    assert out == {"top1": 100.0, "top5": 100.0}


def test_t2i(tmp_path):
    images, _ = clustered(6, 1, noise=0.0, seed=2)
    owner = np.repeat(np.arange(6), 3)
    texts = images[owner] + np.random.default_rng(3).standard_normal((18, 8)).astype(np.float32)
    out = evaluate_embeddings(
        "t2i",
        save(tmp_path, "img.npy", images),
        query_embeddings=save(tmp_path, "txt.npy", texts),
        query_labels=save(tmp_path, "owner.npy", owner),
    )
    expected = P.evaluate_t2i(
        torch.nn.functional.normalize(torch.from_numpy(images), dim=1),
        torch.nn.functional.normalize(torch.from_numpy(texts), dim=1),
        torch.from_numpy(owner),
    )
    assert out == pytest.approx(expected)
    assert {"recall@1", "recall@5", "recall@10"} <= set(out)


@pytest.mark.parametrize(
    ("protocol", "given", "flag"),
    [
        ("gpr1200", {}, "--labels"),
        ("cub", {}, "--labels"),
        ("revisited", {"gnd": []}, "--query-embeddings"),
        ("revisited", {"query_embeddings": np.eye(2, dtype=np.float32)}, "--gnd"),
        (
            "knn",
            {"labels": np.zeros(2, int), "query_embeddings": np.eye(2, dtype=np.float32)},
            "--query-labels",
        ),
        ("t2i", {"query_labels": np.zeros(2, int)}, "--query-embeddings"),
    ],
)
def test_missing_flag_is_named(protocol, given, flag):
    with pytest.raises(InputError, match=f"needs {flag}"):
        evaluate_embeddings(protocol, np.eye(2, dtype=np.float32), **given)


def test_bad_inputs():
    emb = np.eye(3, dtype=np.float32)
    with pytest.raises(ConfigError, match="valid protocols"):
        evaluate_embeddings("oxford", emb, np.arange(3))
    with pytest.raises(InputError, match="does not use --gnd"):
        evaluate_embeddings("instre", emb, np.arange(3), gnd=[])
    with pytest.raises(InputError, match="astype"):
        evaluate_embeddings("instre", emb, np.arange(3, dtype=np.float64))
    with pytest.raises(InputError, match=r"\(3,\) integers"):
        evaluate_embeddings("cub", emb, np.arange(4))
    with pytest.raises(InputError, match="float array"):
        evaluate_embeddings("cub", np.eye(3, dtype=np.int64), np.arange(3))
    with pytest.raises(InputError, match="NaN"):
        evaluate_embeddings("cub", np.full((3, 2), np.nan, np.float32), np.arange(3))
    with pytest.raises(InputError, match="must be < 3"):
        evaluate_embeddings("t2i", emb, query_embeddings=emb, query_labels=np.array([0, 1, 3]))
    with pytest.raises(InputError, match="2 queries"):
        evaluate_embeddings(
            "revisited", emb, query_embeddings=emb, gnd=[{"easy": [], "hard": [], "junk": []}] * 2
        )


def test_load_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_array(tmp_path / "missing.npy")
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(InputError, match="not a readable"):
        load_array(tmp_path / "text.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match=r"1-D .* or 2-D"):
        load_array(tmp_path / "cube.npy")
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))
    with pytest.raises(InputError, match="dtype"):
        load_array(tmp_path / "strings.npy")
    with (tmp_path / "bad.pkl").open("wb") as f:
        pickle.dump({"gnd": [{"easy": []}]}, f)
    with pytest.raises(InputError, match="lacks"):
        load_gnd(tmp_path / "bad.pkl")
