"""FAISS, embedded (no server): any ``faiss.index_factory`` string with inner-product metric.

``Flat`` (the default) is exact. Structures that need training (IVF, PQ, OPQ, ...) are trained on a
seeded random sample of the vectors: ``train_size`` vectors, by default 64 per inverted list and at
least 65,536 (what 8-bit PQ codebooks use), or all of them if there are fewer. Search parameters use FAISS's ``ParameterSpace`` syntax
(``"nprobe=32"``, ``"efSearch=128"``, ``"nprobe=16,k_factor_rf=4"``). Unless they say otherwise, IVF
indexes probe ``default_nprobe(nlist)`` lists and HNSW indexes use ``efSearch`` = ``DEFAULT_EF_SEARCH``,
settings that keep recall@10 high (see benchmarks/index_search.py) rather than FAISS's defaults (1 and 16).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from mcip.errors import ConfigError, InputError, require
from mcip.index.backends.base import Backend, UnsupportedFilter, float32_chunks

INDEX_FILE = "faiss.index"
DEFAULT_EF_SEARCH = 128
PQ_TRAINING_POINTS = 256 * 256  # k-means of 256 centroids per sub-quantizer, 256 points each
TRAINING_POINTS_PER_LIST = 64  # FAISS warns below 39 per list; more costs training time, little recall


def _faiss():
    return require("faiss", "index", "FAISS indexes")


def default_nprobe(nlist: int) -> int:
    """Inverted lists probed per query by default: sqrt(nlist), at least 8, at most nlist."""
    return min(nlist, max(8, round(math.sqrt(nlist))))


@functools.cache
def _swig_ptr():
    return _faiss().swig_ptr


def _faiss_message(exc: Exception) -> str:
    """The useful tail of a FAISS C++ error ("Error: '...' failed: what")."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text.split(": ", 1)[-1] if "Error in" in text else text


def reduce_for_inner_product(index, sample: np.ndarray) -> np.ndarray:
    """Set the ``LinearTransform`` of ``index`` (an ``IndexPreTransform``) to the projection on the top K
    right singular vectors of ``sample`` (n, D), and return it (K, D).

    Not FAISS's ``PCAMatrix``: that one subtracts the mean first, and for inner-product search the mean
    term changes the ranking (q.(x - m) ranks x differently from q.x whenever m is not 0, and CLIP-style
    embeddings share a large common direction). The uncentred projection P keeps q P^T P x, the best
    rank-K approximation of q.x over the sample in the least-squares sense.
    """
    faiss = _faiss()
    transform = faiss.downcast_VectorTransform(index.chain.at(0))
    k = transform.d_out
    _, _, vt = np.linalg.svd(sample.astype(np.float64), full_matrices=False)
    projection = np.ascontiguousarray(vt[:k], dtype=np.float32)
    faiss.copy_array_to_vector(projection.ravel(), transform.A)
    faiss.copy_array_to_vector(np.zeros(k, dtype=np.float32), transform.b)
    transform.is_trained = True
    return projection


class FaissBackend(Backend):
    name = "faiss"
    defaults: ClassVar[dict] = {
        "factory": "Flat",
        "search_params": None,
        "train_size": None,
        "seed": 0,
        "dim": None,  # reduce to this many dimensions first (see reduce_for_inner_product)
    }

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.index = None

    @property
    def factory(self) -> str:
        return self.options["factory"]

    def _new_index(self, dim: int):
        faiss = _faiss()
        reduced = self.options["dim"]
        if reduced is not None and not 1 <= int(reduced) < dim:
            raise ConfigError(f"dim={reduced} does not reduce {dim}-d vectors; use 1 <= dim < {dim}.")
        try:
            if reduced is None:
                return faiss.index_factory(dim, self.factory, faiss.METRIC_INNER_PRODUCT)
            inner = faiss.index_factory(int(reduced), self.factory, faiss.METRIC_INNER_PRODUCT)
            return faiss.IndexPreTransform(faiss.LinearTransform(dim, int(reduced), False), inner)
        except RuntimeError as exc:
            raise ConfigError(
                f"FAISS cannot build the index '{self.factory}' for {dim}-d vectors: {_faiss_message(exc)}. "
                "Use a faiss.index_factory string such as Flat, HNSW32, IVF1024,Flat or IVF4096,PQ64 "
                f"(PQ needs M dividing {dim})."
            ) from None

    def _train(self, index, vectors: np.ndarray) -> None:
        faiss = _faiss()
        n = vectors.shape[0]
        ivf = faiss.try_extract_index_ivf(index)
        nlist = int(ivf.nlist) if ivf is not None else 0
        if n < nlist:
            suggest = 2 ** max(0, int(math.log2(max(1, n // 39))))
            raise ConfigError(
                f"'{self.factory}' has {nlist} inverted lists, so training needs at least {nlist} vectors "
                f"(FAISS recommends {39 * nlist:,}); this index has {n:,}. Use fewer lists (e.g. "
                f"IVF{suggest}), or Flat / HNSW32 for a collection this small."
            )
        size = self.options["train_size"] or max(TRAINING_POINTS_PER_LIST * nlist, PQ_TRAINING_POINTS)
        rng = np.random.default_rng(self.options["seed"])
        rows = np.sort(rng.choice(n, size=min(n, size), replace=False))
        sample = np.ascontiguousarray(vectors[rows], dtype=np.float32)
        if self.options["dim"] is not None:
            reduce_for_inner_product(index, sample)
        try:
            index.train(sample)
        except RuntimeError as exc:
            raise ConfigError(
                f"FAISS could not train '{self.factory}' on {len(rows):,} vectors: {_faiss_message(exc)}. "
                "Index more images, or choose a smaller structure (fewer lists, fewer PQ bits)."
            ) from None

    def check(self, dim: int) -> None:
        self._apply_search_params(self._new_index(dim))

    def build(self, folder: Path, vectors: np.ndarray, ids: Sequence[str]) -> None:
        index = self._new_index(vectors.shape[1])
        if not index.is_trained:
            self._train(index, vectors)
        for _, chunk in float32_chunks(vectors):
            index.add(chunk)
        self._apply_search_params(index)  # fail now, not at the first query, on a bad parameter
        _faiss().write_index(index, str(folder / INDEX_FILE))

    def append(
        self, previous: Path, folder: Path, vectors: np.ndarray, start: int, ids: Sequence[str]
    ) -> None:
        index = _faiss().read_index(str(previous / INDEX_FILE))
        if index.ntotal != start:
            raise InputError(
                f"{previous / INDEX_FILE} holds {index.ntotal} vectors, expected {start}; rebuild."
            )
        for _, chunk in float32_chunks(vectors, start):
            index.add(chunk)
        _faiss().write_index(index, str(folder / INDEX_FILE))

    def open(self, folder: Path, count: int) -> None:
        path = folder / INDEX_FILE
        if not path.is_file():
            raise InputError(f"{path} is missing; the index folder is incomplete (rebuild it).")
        self.index = _faiss().read_index(str(path))
        if self.index.ntotal != count:
            raise InputError(
                f"{path} holds {self.index.ntotal} vectors, the manifest {count}; rebuild the index."
            )
        self._apply_search_params(self.index)

    def search_params(self, index) -> str:
        """The parameters applied at open: this structure's defaults, then the ``search_params`` option
        (which wins where both set a parameter)."""
        ivf = _faiss().try_extract_index_ivf(index)
        if ivf is not None:
            default = f"nprobe={default_nprobe(int(ivf.nlist))}"
        else:
            default = f"efSearch={DEFAULT_EF_SEARCH}" if "HNSW" in self.factory.upper() else ""
        given = self.options["search_params"] or ""
        keys = {part.split("=")[0].strip() for part in given.split(",") if part.strip()}
        kept = [part for part in default.split(",") if part and part.split("=")[0] not in keys]
        return ",".join([*kept, *(p.strip() for p in given.split(",") if p.strip())])

    def _apply_search_params(self, index) -> None:
        params = self.search_params(index)
        if not params:
            return
        try:
            _faiss().ParameterSpace().set_index_parameters(index, params)
        except RuntimeError as exc:
            raise ConfigError(
                f"Cannot set search parameters '{params}' on a '{self.factory}' index: {_faiss_message(exc)}. "
                "IVF indexes take nprobe=N, HNSW indexes efSearch=N, refined ones k_factor_rf=N."
            ) from None

    def search(
        self, queries: np.ndarray, k: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if rows is None:
            index = self.index
            n = len(queries)
            if (
                k > 0
                and queries.dtype == np.float32
                and queries.flags.c_contiguous
                and queries.shape[1:] == (index.d,)
            ):
                # FAISS's own C entry point with fresh outputs: its Python wrapper re-checks and re-copies
                # what mcip has already made right (10-18 us per call in a timeit loop of one HNSW query)
                swig_ptr = _swig_ptr()
                distances = np.empty((n, k), dtype=np.float32)
                labels = np.empty((n, k), dtype=np.int64)
                index.search_c(n, swig_ptr(queries), k, swig_ptr(distances), swig_ptr(labels))
                return distances, labels
            return index.search(queries, k)
        faiss = _faiss()
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(rows, dtype=np.int64))
        ivf = faiss.try_extract_index_ivf(self.index)
        hnsw = getattr(faiss.downcast_index(self.index), "hnsw", None)
        if ivf is not None:  # keep the probes set at open
            params = faiss.SearchParametersIVF(sel=selector, nprobe=int(ivf.nprobe))
        elif hnsw is not None:
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=int(hnsw.efSearch))
        else:
            params = faiss.SearchParameters(sel=selector)
        try:
            return self.index.search(queries, k, params=params)
        except RuntimeError as exc:
            raise UnsupportedFilter(
                f"A '{self.factory}' FAISS index cannot search a subset of its rows ({_faiss_message(exc)})."
            ) from None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) if self.index is not None else 0

    def close(self) -> None:
        self.index = None
