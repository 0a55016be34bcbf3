"""The interface every vector backend of an index implements.

A backend stores the vectors of rows ``0..N-1`` and returns the rows nearest to a query by inner product
(the embeddings are L2-normalised, so that is cosine similarity). Everything else (ids, paths, metadata,
the float16 embeddings themselves) lives in the index folder, the same for every backend.

Life cycle: ``build`` (or ``append``) writes into the new index folder before it is swapped in; ``commit``
runs after the swap (a server backend moves its alias there); ``open`` + ``search`` serve queries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mcip.errors import ConfigError

CHUNK_ROWS = 65_536


class UnsupportedFilter(Exception):
    """The backend cannot rank a subset of its rows; the caller ranks them exactly from the stored
    embeddings instead."""


def float32_chunks(
    vectors: np.ndarray, start: int = 0, rows: int = CHUNK_ROWS
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, (n, D) float32 C-contiguous)`` chunks of ``vectors[start:]`` (bounded memory)."""
    for lo in range(start, vectors.shape[0], rows):
        yield lo, np.ascontiguousarray(vectors[lo : lo + rows], dtype=np.float32)


class Backend(ABC):
    """One vector store. Subclasses set ``name``, ``defaults`` (every option with its default) and
    ``secrets`` (options never written to the manifest, e.g. an API key)."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    secrets: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(
                f"Unknown option(s) {', '.join(unknown)} for the {self.name} backend; valid: {valid}."
            )
        self.options = {**self.defaults, **{k: v for k, v in options.items() if v is not None}}
        self.state: dict[str, Any] = {}

    def stored_options(self) -> dict[str, Any]:
        """The options written to the manifest (secrets left out)."""
        return {k: v for k, v in self.options.items() if k not in self.secrets}

    @property
    def factory(self) -> str | None:
        """The index structure, for ``info`` (a FAISS factory string; None when the backend decides)."""
        return None

    def check(self, dim: int) -> None:  # noqa: B027 (optional hook)
        """Fail early (before any image is encoded) if the options cannot index ``dim``-d vectors."""

    @abstractmethod
    def build(self, folder: Path, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Index ``vectors`` (N, D) float16 (rows 0..N-1, ids for payloads) into ``folder``; set ``state``."""

    @abstractmethod
    def append(
        self, previous: Path, folder: Path, vectors: np.ndarray, start: int, ids: Sequence[str]
    ) -> None:
        """``folder`` gets the previous index (in ``previous``, with ``state`` loaded) plus rows
        ``start..N-1`` of ``vectors`` (N, D); ``ids`` are all N ids."""

    @abstractmethod
    def open(self, folder: Path, count: int) -> None:
        """Load the index written by ``build`` / ``append`` (``state`` set from the manifest) for the
        ``count`` rows the index folder holds."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (Q, k) float32, rows (Q, k) int64)`` for queries (Q, D) float32, best first; row -1
        where fewer than k vectors are found. ``rows`` (sorted int64): rank only these rows (a metadata
        filter, :mod:`mcip.index.filters`)."""

    def commit(self, previous_state: dict[str, Any] | None) -> None:  # noqa: B027 (optional hook)
        """Called after the new index folder replaced the old one (``previous_state``: the old ``state``)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release files and connections."""
