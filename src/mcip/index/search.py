"""``SearchIndex``: query an index by text, by image, by both, by a vector or by an indexed image's id.

Every query becomes one L2-normalised vector q (D,) in the joint space; a hit's score is the inner
product of q with the stored image embedding (cosine similarity). Text and image together:
``q = normalize(alpha * image_embedding + (1 - alpha) * text_embedding)``.

Every search takes ``where``: metadata filters (``["label=cereal", "price<5"]``, all must hold; see
:mod:`mcip.index.filters`), so only matching images are ranked.

Safe to call from several threads: model inference runs under a lock, the filter cache under another, the
backends read concurrently.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcip.errors import ConfigError, InputError
from mcip.index.backends import Backend, create_backend
from mcip.index.backends.base import UnsupportedFilter
from mcip.index.filters import matching_rows, parse_where
from mcip.index.hits import Hit, Hits, IndexedImage, UnknownId
from mcip.index.identity import QueryModel, check_model, resolve_model
from mcip.index.query import (
    MAX_K,
    MAX_TEXT_CHARS,
    UNIT_TOLERANCE,
    check_k,
    check_text,
    open_query_image,
    unit_query,
    unit_vector,
)
from mcip.index.store import StoredIndex

__all__ = ["MAX_K", "MAX_TEXT_CHARS", "Hit", "Hits", "IndexedImage", "SearchIndex", "UnknownId"]
FILTER_CACHE = 64  # expression sets whose matching rows are kept
_dot = np.dot


def _open_model(model, manifest: dict, index_dir, device: str) -> tuple[QueryModel, bool]:
    """The query model and whether its text tower differs from the build's (warned about)."""
    resolved = resolve_model(model, manifest, device)
    changed = check_model(resolved, manifest, index_dir).text_tower_changed
    if changed:
        warnings.warn(
            f"{resolved.spec} has the image tower {index_dir} was built with but another text tower "
            "(as after Re-A): image embeddings match, text queries use the new text tower.",
            stacklevel=3,
        )
    return resolved, changed


class SearchIndex:
    """An opened index folder. Build one with :func:`mcip.index.build_index`; open with :meth:`open`."""

    def __init__(
        self, stored: StoredIndex, backend: Backend, model: QueryModel | None, text_tower_changed: bool
    ) -> None:
        self._stored = stored
        self._backend = backend
        self.model = model
        self._lock = threading.Lock()
        self._filters: dict[tuple[str, ...], np.ndarray] = {}
        self._filters_lock = threading.Lock()
        self.info: dict = {
            **stored.manifest,
            "path": str(stored.dir),
            "text_tower_changed": text_tower_changed,
        }
        self.dim = int(stored.manifest["dim"])

    @classmethod
    def open(
        cls,
        index_dir: str | os.PathLike,
        model: QueryModel | str | os.PathLike | None = None,
        device: str = "cpu",
        backend: str | None = None,
        *,
        backend_options: dict | None = None,
        load_model: bool = True,
    ) -> SearchIndex:
        """Open ``index_dir`` for queries.

        Args:
            model: None loads the model the index was built with; a model or spec must have the same image
                tower (else ``ConfigError``). A changed text tower (e.g. after Re-A) is accepted, with a warning.
                An :class:`~mcip.export.onnx_model.OnnxModel` (an ONNX export on onnxruntime) is checked by
                the fingerprints its export recorded for its source model.
            backend: None, or the backend the index was built with (a check).
            backend_options: per-session options (FAISS ``search_params``; Qdrant ``url``, ``api_key``, ...).
            load_model: False opens without a model: only ``search_vector`` / ``search_by_id`` then work.
        """
        stored = StoredIndex(index_dir)
        try:
            manifest = stored.manifest
            if backend is not None and backend != manifest["backend"]:
                raise ConfigError(
                    f"{index_dir} was built with the {manifest['backend']} backend, not {backend}; rebuild it "
                    f"with mcip index build --backend {backend} to use {backend}."
                )
            resolved, changed = (
                _open_model(model, manifest, index_dir, device) if load_model else (None, False)
            )
            store = create_backend(
                manifest["backend"], **{**manifest["backend_options"], **(backend_options or {})}
            )
            store.state = dict(manifest.get("backend_state", {}))
            store.open(stored.dir, len(stored))
        except BaseException:
            stored.close()
            raise
        return cls(stored, store, resolved, changed)

    def __len__(self) -> int:
        return len(self._stored)

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._backend.close()
        self._stored.close()

    # ----------------------------------------------------------------- records
    @property
    def ids(self) -> list[str]:
        """The N ids in row order."""
        return self._stored.ids

    @property
    def embeddings(self) -> np.ndarray:
        """(N, D) float16 stored embeddings (read-only memory map), rows in the order of :attr:`ids`."""
        return self._stored.embeddings

    def row_of(self, id: str) -> int | None:
        """The row of image ``id``, or None."""
        return self._stored.row_of.get(id)

    def iter_records(self):
        """Every indexed image as an :class:`~mcip.index.records.IndexRecord`, in row order."""
        return self._stored.iter_records()

    def has(self, id: str) -> bool:
        return id in self._stored.row_of

    def _row(self, id: str) -> int:
        row = self._stored.row_of.get(id)
        if row is None:
            raise UnknownId(f"No image with id {id!r} in this index.")
        return row

    def record(self, id: str) -> IndexedImage:
        """The indexed image ``id`` (``UnknownId`` if absent)."""
        row = self._row(id)
        return IndexedImage(id, self._stored.paths[row], self._stored.metadata(row))

    def image_path(self, id: str) -> Path:
        """The file of image ``id``, as stored at build time (never a path joined from user input)."""
        return Path(self._stored.paths[self._row(id)])

    def embedding(self, id: str) -> np.ndarray:
        """(D,) float32 stored embedding of image ``id``."""
        return self._stored.vectors(self._row(id))

    # ----------------------------------------------------------------- encoding
    def _require_model(self) -> QueryModel:
        if self.model is None:
            raise ConfigError(
                "This index was opened with load_model=False; text and image queries need the model."
            )
        return self.model

    @torch.no_grad()
    def _embed_text(self, text: str) -> np.ndarray:
        model = self._require_model()
        with self._lock:
            return model.encode_text([text]).float().cpu().numpy()[0]

    def image_draft_size(self) -> int | None:
        """The model's JPEG draft size: query files decode as the indexed ones did."""
        return getattr(self._require_model().eval_transform, "draft_size", None)

    @torch.no_grad()
    def _embed_image(self, img) -> np.ndarray:
        model = self._require_model()
        try:
            pixels = model.eval_transform(img)[None]
        except (OSError, ValueError) as exc:
            raise InputError(f"Cannot use the query image ({type(exc).__name__}: {exc}).") from None
        with self._lock:
            return model.encode_image(pixels).float().cpu().numpy()[0]

    def encode_text(self, text: str) -> np.ndarray:
        """(D,) float32 unit embedding of a text query (validated: not empty, at most MAX_TEXT_CHARS)."""
        return self._embed_text(check_text(text))

    def encode_image(self, image: Any) -> np.ndarray:
        """(D,) float32 unit embedding of a query image (PIL image, bytes, file object or path)."""
        return self._embed_image(open_query_image(image, self.image_draft_size()))

    def query_vector(self, text: str | None = None, image: Any = None, alpha: float = 0.5) -> np.ndarray:
        """The (D,) query of :meth:`search` (see the module docstring). Every input is validated before
        the model runs."""
        if text is None and image is None:
            raise InputError("Give a text query, an image, or both.")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must be a number from 0 to 1 (the image's weight), got {alpha!r}.")
        self._require_model()
        text = check_text(text) if text is not None else None
        img = open_query_image(image, self.image_draft_size()) if image is not None else None
        if img is None:
            return self._embed_text(text)
        if text is None:
            return self._embed_image(img)
        mixed = alpha * self._embed_image(img) + (1.0 - alpha) * self._embed_text(text)
        return unit_vector(mixed, "mixed query (text and image point in opposite directions)")

    # ----------------------------------------------------------------- search
    def search(
        self,
        text: str | None = None,
        image: Any = None,
        alpha: float = 0.5,
        k: int = 10,
        where: str | list[str] | tuple[str, ...] | None = None,
    ) -> Hits:
        """The ``k`` images nearest to a text, an image, or their alpha-weighted mixture (among the images
        that match ``where``)."""
        check_k(k)
        conditions = parse_where(where)  # a bad filter fails before the model runs
        return self.search_vector(self.query_vector(text, image, alpha), k, where=conditions)

    def filter_rows(self, where) -> np.ndarray | None:
        """The sorted rows matching ``where`` (None: no filter), cached per expression set."""
        conditions = parse_where(where)
        if not conditions:
            return None
        key = tuple(sorted(map(str, conditions)))
        with self._filters_lock:
            rows = self._filters.get(key)
        if rows is None:
            rows = matching_rows(conditions, self._stored.column, len(self))  # outside the lock: may be slow
            with self._filters_lock:  # server threads share the cache: evict and insert as one step
                if key not in self._filters and len(self._filters) >= FILTER_CACHE:
                    self._filters.pop(next(iter(self._filters)))
                self._filters[key] = rows
        return rows

    def _search_rows(self, q: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The backend's search, over ``rows`` only when given (exact ranking of those rows from the
        stored embeddings when the backend cannot restrict its search)."""
        if rows is None:
            return self._backend.search(q, k)
        k = min(k, len(rows))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        try:
            return self._backend.search(q, k, rows)
        except UnsupportedFilter:
            scores = q @ self._stored.vectors(rows).T
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(scores, order, axis=1), rows[order]

    def search_vector(
        self, vector: np.ndarray, k: int = 10, exclude_id: str | None = None, where=None
    ) -> Hits:
        """The ``k`` images nearest to ``vector`` (D,) (normalised here), optionally without ``exclude_id``
        and among the images matching ``where`` only. The hot path of every query: a float32 vector of
        the right shape and a plain int ``k`` skip straight to the checks that matter, and the hits are
        built when first read (:class:`Hits`)."""
        if type(k) is not int or not 1 <= k <= MAX_K:
            check_k(k)
        if type(vector) is not np.ndarray or vector.dtype != np.float32 or vector.shape != (self.dim,):
            vector = self._as_query(vector)
        if not abs(float(_dot(vector, vector)) - 1.0) < UNIT_TOLERANCE:  # unit_query, inlined
            vector = unit_vector(vector, "query vector")
        if exclude_id is None and not where:
            scores, found = self._backend.search(vector[None], k)
            return Hits(scores, found, k, -1, self._stored.reader)
        exclude = self._row(exclude_id) if exclude_id is not None else -1
        fetch = min(k + (exclude >= 0), len(self._stored))
        scores, found = self._search_rows(vector[None], fetch, self.filter_rows(where) if where else None)
        return Hits(scores, found, k, exclude, self._stored.reader)

    def _as_query(self, vector) -> np.ndarray:
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise InputError(f"The query vector has {q.shape[0]} dimensions; this index holds {self.dim}.")
        return q

    def search_vectors(self, vectors: np.ndarray, k: int = 10, where=None) -> list[Hits]:
        """:meth:`search_vector` for Q queries (Q, D) at once (one backend call)."""
        check_k(k)
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InputError(f"Expected queries of shape (Q, {self.dim}), got {tuple(q.shape)}.")
        q = np.stack([unit_query(v) for v in q]) if len(q) else q
        scores, rows = self._search_rows(np.ascontiguousarray(q), min(k, len(self)), self.filter_rows(where))
        reader = self._stored.reader
        return [Hits(s, r, k, -1, reader) for s, r in zip(scores, rows, strict=True)]

    def search_by_id(self, id: str, k: int = 10, exclude_self: bool = False, where=None) -> Hits:
        """The ``k`` images nearest to indexed image ``id`` (its stored embedding); itself first unless
        excluded (or filtered out by ``where``)."""
        return self.search_vector(self.embedding(id), k, exclude_id=id if exclude_self else None, where=where)
