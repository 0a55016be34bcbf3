"""The shape every benchmark adapter produces. Adapters read a dataset's standard on-disk layout and
return one of these; the protocols in ``mcip.eval.protocols`` turn their embeddings into metrics.

An adapter never loads a model: ``check(root)`` fails fast (before any model is loaded) with what to
download and where to put it, and ``load(root)`` lists files and labels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from mcip.errors import MCIPError
from mcip.registry import Registry

Family = Literal["i2i", "knn", "zeroshot", "t2i"]


class DatasetMissingError(MCIPError, FileNotFoundError):
    """A benchmark's files are not where the adapter looks; the message says what to download."""


@dataclass(frozen=True)
class Images:
    """Image files to encode, with optional integer labels (N,)."""

    paths: tuple[Path, ...]
    labels: np.ndarray | None = None  # (N,) int64


@dataclass(frozen=True)
class RetrievalSet:
    """All-vs-all image retrieval (GPR1200, INSTRE: mAP, query itself included; CUB: Recall@k, excluded).

    ``subsets``: named slices of the query rows whose mean AP is also reported (GPR1200's six).
    """

    images: Images
    include_self: bool
    metric: Literal["map", "recall"]
    ks: tuple[int, ...] = (1, 2, 4, 8)
    subsets: tuple[tuple[str, int, int], ...] = ()  # (name, start, stop) over query rows


@dataclass(frozen=True)
class RevisitedSet:
    """ROxford5k / RParis6k: queries against a database; ``gnd[i]`` has ``easy``, ``hard``, ``junk`` index
    arrays into the database (the revisitop ground truth)."""

    database: Images
    queries: Images
    gnd: tuple[dict, ...]


@dataclass(frozen=True)
class KNNSet:
    """k-NN classification: ``index`` images with labels vote for each query (labels in 0..num_classes-1)."""

    index: Images
    queries: Images
    num_classes: int


@dataclass(frozen=True)
class ZeroShotSet:
    """Zero-shot classification: ``classnames[c]`` names label c; ``templates`` contain ``{}``."""

    images: Images
    classnames: tuple[str, ...]
    templates: tuple[str, ...]


@dataclass(frozen=True)
class CaptionSet:
    """Text-image retrieval: ``caption_image[t]`` is the row of caption t's image in ``images``."""

    images: Images
    captions: tuple[str, ...]
    caption_image: np.ndarray  # (T,) int64


BenchmarkData = RetrievalSet | RevisitedSet | KNNSet | ZeroShotSet | CaptionSet


@dataclass
class Benchmark(ABC):
    """One dataset. ``name`` is what ``--benchmarks`` accepts; ``family`` places it in Table 1;
    ``table1_metric`` is the key of the number Table 1 reports (e.g. ``map``, ``recall@1``, ``medium_map``,
    ``top1``, ``t2i_recall@5``)."""

    name: ClassVar[str]
    family: ClassVar[Family]
    table1_metric: ClassVar[str]
    options: dict = field(default_factory=dict)

    @abstractmethod
    def check(self, root: Path) -> None:
        """Raise :class:`DatasetMissingError` (what to download, where to put it) unless the files exist."""

    @abstractmethod
    def load(self, root: Path) -> BenchmarkData:
        """Read the layout under ``root`` (files and labels only; no model, no image decoding)."""


BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark")
