"""What a search returns: :class:`Hits`, the hits of one query in rank order (a read-only sequence of
:class:`Hit`, built when first read), :class:`IndexedImage` (an indexed image by id) and
:class:`UnknownId` (an id the index does not hold). :mod:`mcip.index.search` makes them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from mcip.errors import InputError
from mcip.index.store import RowReader

_new_object = object.__new__
_set = object.__setattr__


class UnknownId(InputError):
    """An id that the index does not hold."""


@dataclass(frozen=True)
class IndexedImage:
    """An indexed image: ``id``, ``path`` (absolute, as indexed) and ``metadata`` (label, captions, extras)."""

    id: str
    path: str
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result: ``score`` is the cosine similarity (or the alpha-mixed one), ``rank`` 1-based."""

    id: str
    path: str
    score: float
    rank: int
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "score": self.score,
            "id": self.id,
            "path": self.path,
            "metadata": self.metadata,
        }


class Hits(Sequence):
    """The hits of one query in rank order: a read-only sequence of :class:`Hit` that compares equal to
    the list (or tuple) of the same hits. The :class:`Hit` objects are built when the sequence is first
    read (its length included), so a query costs the search and not the Python objects of results nobody
    reads; they stay readable after the index is closed. ``list(hits)`` gives a plain list.
    """

    __slots__ = ("_built", "_exclude", "_k", "_reader", "_rows", "_scores")

    def __init__(self, scores: np.ndarray, rows: np.ndarray, k: int, exclude: int, reader: RowReader) -> None:
        """``scores``, ``rows``: the backend's results for one query, (k',) or (1, k') (row -1: none), at
        most ``k`` kept, ``exclude``: a row to leave out (-1: none)."""
        self._scores, self._rows, self._k, self._exclude, self._reader = scores, rows, k, exclude, reader
        self._built: list[Hit] | None = None

    def _parts(self) -> tuple:
        """The arguments this sequence was made from (benchmarks rebuild hits from them)."""
        return self._scores, self._rows, self._k, self._exclude, self._reader

    def _list(self) -> list[Hit]:
        built = self._built
        if built is None:
            built = self._built = _build_hits(self._scores, self._rows, self._k, self._exclude, self._reader)
        return built

    def __len__(self) -> int:
        return len(self._list())

    def __getitem__(self, i):
        return self._list()[i]

    def __iter__(self) -> Iterator[Hit]:
        return iter(self._list())

    def __reversed__(self) -> Iterator[Hit]:
        return reversed(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hits):
            other = other._list()
        if isinstance(other, list | tuple):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __repr__(self) -> str:
        return f"Hits({self._list()!r})"

    def __reduce__(self):
        return list, (self._list(),)  # pickles (and copies) as the plain list of its hits


def _build_hits(scores: np.ndarray, rows: np.ndarray, k: int, exclude: int, reader: RowReader) -> list[Hit]:
    """Hits for backend results: rows -1 (none) and ``exclude`` left out, at most ``k``. Plain rows take
    their metadata from memory; Hit objects skip ``__init__`` (frozen dataclass: no setattr per field)."""
    hits: list[Hit] = []
    append, rank = hits.append, 0
    ids, paths, labels, plain = reader.ids, reader.paths, reader.labels, reader.plain
    for score, row in zip(scores.reshape(-1).tolist(), rows.reshape(-1).tolist(), strict=True):
        if row < 0 or row == exclude:
            continue
        rank += 1
        meta = {"label": labels[row], "captions": []} if plain[row] else reader.metadata(row)
        hit = _new_object(Hit)
        _set(
            hit,
            "__dict__",
            {"id": ids[row], "path": paths[row], "score": score, "rank": rank, "metadata": meta},
        )
        append(hit)
        if rank == k:
            break
    return hits
