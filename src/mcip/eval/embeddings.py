"""Metrics of precomputed embeddings (``mcip eval embeddings``): what users of GPR1200-style tools expect.

Protocols and their inputs (arrays as .npy; labels are integer arrays):

- ``gpr1200``, ``instre``: ``embeddings`` (N, D) + ``labels`` (N,); all-vs-all mAP with the query itself
  included. gpr1200 with N == 12,000 also reports the six subset mAPs (``map/landmarks`` ...
  ``map/faces``: consecutive 2,000-row slices in the dataset's file order).
- ``cub``: ``embeddings`` + ``labels``; all-vs-all Recall@1/2/4/8 with the query itself excluded.
- ``revisited``: ``query_embeddings`` (70 queries) against the database ``embeddings``, ``gnd`` (revisitop
  ground truth); ``{easy,medium,hard}_map`` and mP@1/5/10.
- ``knn``: ``embeddings`` + ``labels`` are the index, ``query_embeddings`` + ``query_labels`` the queries;
  weighted 21-NN top-1/top-5 accuracy over ``max(label) + 1`` classes.
- ``t2i``: ``embeddings`` are the image rows, ``query_embeddings`` the text rows and ``query_labels`` each
  text row's image row; text->image ``recall@1/5/10`` and image->text ``i2t_recall@1/5/10``.

Every embedding row is L2-normalised here (so unnormalised exports give cosine similarity too); rows of
zeros stay zero. Values are percentages.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mcip.errors import ConfigError, InputError
from mcip.eval import protocols as P
from mcip.eval.benchmarks.gpr1200 import SUBSETS as GPR1200_SUBSET_NAMES

PROTOCOLS = ("gpr1200", "instre", "cub", "revisited", "knn", "t2i")
GPR1200_SIZE = 12_000
GPR1200_SUBSETS = tuple((name, 2000 * i, 2000 * (i + 1)) for i, name in enumerate(GPR1200_SUBSET_NAMES))
"""GPR1200's six 200-class subsets, in the dataset's file order (2,000 images each)."""

_FLAGS = {
    "labels": "--labels L.npy",
    "query_embeddings": "--query-embeddings Q.npy",
    "query_labels": "--query-labels QL.npy",
    "gnd": "--gnd gnd.pkl",
}
_NEEDS = {
    "gpr1200": ("labels",),
    "instre": ("labels",),
    "cub": ("labels",),
    "revisited": ("query_embeddings", "gnd"),
    "knn": ("labels", "query_embeddings", "query_labels"),
    "t2i": ("query_embeddings", "query_labels"),
}


def load_array(path: str | Path) -> np.ndarray:
    """A numeric 1-D or 2-D array from a ``.npy`` file (no pickles); fails with what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass a .npy array written with numpy.save.")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc}); write it with numpy.save.") from exc
    if not isinstance(array, np.ndarray) or array.ndim not in (1, 2):
        shape = getattr(array, "shape", type(array).__name__)
        raise InputError(f"{path}: expected a 1-D (labels) or 2-D (embeddings) array, got {shape}.")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputError(f"{path}: expected numbers, got dtype {array.dtype}.")
    return array


def load_gnd(path: str | Path) -> list[dict]:
    """The per-query ground truth of a revisitop ``gnd_*.pkl`` (its ``'gnd'`` list of dicts with ``easy``,
    ``hard``, ``junk``). A pickle can run code when loaded: only load files from a source you trust."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: no such file; download gnd_roxford5k.pkl / gnd_rparis6k.pkl from revisitop."
        )
    with path.open("rb") as f:
        try:
            data = pickle.load(f)
        except Exception as exc:  # any unpickling failure means the same thing to the user
            raise InputError(f"{path}: not a readable pickle ({exc}).") from exc
    return _gnd_list(data, str(path))


def _gnd_list(gnd, where: str) -> list[dict]:
    entries = gnd.get("gnd") if isinstance(gnd, Mapping) else gnd
    if not isinstance(entries, Sequence) or not all(isinstance(g, Mapping) for g in entries):
        raise InputError(f"{where}: expected revisitop ground truth: a dict whose 'gnd' is a list of dicts.")
    missing = [i for i, g in enumerate(entries) if not {"easy", "hard", "junk"} <= set(g)]
    if missing:
        raise InputError(f"{where}: gnd entry {missing[0]} lacks one of 'easy', 'hard', 'junk'.")
    return list(entries)


def _embeddings(array: np.ndarray, flag: str) -> Tensor:
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating) or array.shape[0] == 0:
        raise InputError(f"{flag} must be a non-empty (N, D) float array, got {array.shape} {array.dtype}.")
    if not np.isfinite(array).all():
        raise InputError(f"{flag} contains NaN or Inf values; re-export those rows.")
    return torch.nn.functional.normalize(torch.from_numpy(np.asarray(array, dtype=np.float32)), dim=1)


def _labels(array: np.ndarray, n: int, flag: str, rows_of: str) -> Tensor:
    if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"{flag} must be ({n},) integers, one per row of {rows_of}, got {array.shape} {array.dtype}"
            + ("; convert with array.astype(np.int64)." if np.issubdtype(array.dtype, np.floating) else ".")
        )
    if n and array.min() < 0:
        raise InputError(f"{flag} must be non-negative, got {int(array.min())}.")
    return torch.from_numpy(array.astype(np.int64))


def _check_inputs(protocol: str, given: dict) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"Unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}.")
    needs = _NEEDS[protocol]
    for name in needs:
        if given[name] is None:
            raise InputError(f"Protocol '{protocol}' needs {_FLAGS[name]}.")
    extra = [
        _FLAGS[name].split()[0] for name, value in given.items() if value is not None and name not in needs
    ]
    if extra:
        raise InputError(f"Protocol '{protocol}' does not use {', '.join(extra)}; leave it out.")


def _gpr1200(emb, labels, **_) -> dict[str, float]:
    subsets = GPR1200_SUBSETS if len(emb) == GPR1200_SIZE else ()
    return P.map_scores(
        _embeddings(emb, "--embeddings"), _labels(labels, len(emb), "--labels", "--embeddings"), True, subsets
    )


def _instre(emb, labels, **_) -> dict[str, float]:
    return P.map_scores(
        _embeddings(emb, "--embeddings"), _labels(labels, len(emb), "--labels", "--embeddings")
    )


def _cub(emb, labels, **_) -> dict[str, float]:
    return P.recall_scores(
        _embeddings(emb, "--embeddings"), _labels(labels, len(emb), "--labels", "--embeddings")
    )


def _revisited(emb, query_embeddings, gnd, **_) -> dict[str, float]:
    queries = _embeddings(query_embeddings, "--query-embeddings")
    gnd = _gnd_list(gnd, "--gnd")
    if len(gnd) != len(queries):
        raise InputError(f"--gnd has {len(gnd)} queries but --query-embeddings has {len(queries)} rows.")
    return P.evaluate_revisited(queries, _embeddings(emb, "--embeddings"), gnd)


def _knn(emb, labels, query_embeddings, query_labels, **_) -> dict[str, float]:
    index_labels = _labels(labels, len(emb), "--labels", "--embeddings")
    q_labels = _labels(query_labels, len(query_embeddings), "--query-labels", "--query-embeddings")
    num_classes = int(max(index_labels.max(), q_labels.max())) + 1
    index, queries = _embeddings(emb, "--embeddings"), _embeddings(query_embeddings, "--query-embeddings")
    return P.evaluate_knn(index, index_labels, queries, q_labels, num_classes)


def _t2i(emb, query_embeddings, query_labels, **_) -> dict[str, float]:
    owner = _labels(query_labels, len(query_embeddings), "--query-labels", "--query-embeddings")
    if len(owner) and owner.max() >= len(emb):
        raise InputError(
            f"--query-labels are image rows of --embeddings: must be < {len(emb)}, got {int(owner.max())}."
        )
    images, texts = _embeddings(emb, "--embeddings"), _embeddings(query_embeddings, "--query-embeddings")
    return P.evaluate_t2i(images, texts, owner)


_RUN: dict[str, Callable[..., dict[str, float]]] = {
    "gpr1200": _gpr1200,
    "instre": _instre,
    "cub": _cub,
    "revisited": _revisited,
    "knn": _knn,
    "t2i": _t2i,
}


def evaluate_embeddings(
    protocol: str,
    embeddings: np.ndarray,
    labels: np.ndarray | None = None,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    gnd: Mapping | Sequence[Mapping] | None = None,
) -> dict[str, float]:
    """``{metric: percent}`` of precomputed embeddings under ``protocol`` (one of :data:`PROTOCOLS`; see the
    module docstring for what each needs). Missing or superfluous inputs fail naming the command-line flag.

    ``gnd`` is the revisitop pickle's dict or its ``'gnd'`` list (see :func:`load_gnd`).
    """
    given = {"labels": labels, "query_embeddings": query_embeddings, "query_labels": query_labels, "gnd": gnd}
    _check_inputs(protocol, given)
    arrays = {k: v if k == "gnd" else np.asarray(v) for k, v in given.items() if v is not None}
    return _RUN[protocol](np.asarray(embeddings), **arrays)
