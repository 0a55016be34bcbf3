"""The shape every benchmark adapter produces. Adapters read a dataset's standard on-disk layout and
return one of these; the protocols in ``mcip.eval.protocols`` turn their embeddings into metrics.

An adapter never loads a model: ``check(root)`` fails fast (before any model is loaded) with what to
download and where to put it, and ``load(root)`` lists files and labels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from mcip.errors import ConfigError, MCIPError
from mcip.registry import Registry

Family = Literal["i2i", "knn", "zeroshot", "t2i"]


class DatasetMissingError(MCIPError, FileNotFoundError):
    """A benchmark's files are not where the adapter looks; the message says what to download."""


def dataset_missing(path: Path, download: str, problem: str = "not found") -> DatasetMissingError:
    """The error for ``path`` (the exact file or folder looked for) with the download instructions."""
    return DatasetMissingError(f"{path}: {problem}. {download}")


@dataclass(frozen=True)
class Images:
    """Image files to encode, with optional integer labels (N,).

    ``skipped``: images the source listed whose file was absent, left out of ``paths`` (a user's manifest
    naming deleted photos); the runner counts them as unreadable.
    """

    paths: tuple[Path, ...]
    labels: np.ndarray | None = None  # (N,) int64
    skipped: int = 0


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
    """Zero-shot classification: ``classnames[c]`` names label c; ``templates`` contain ``{}``.

    ``label_sets``: when not None, ``label_sets[i]`` holds every class id accepted as correct for image i
    (ObjectNet: the ImageNet classes mapped to the image's ObjectNet class); a prediction is a hit when it
    is in the set, and ``images.labels[i]`` is then only a representative (the smallest id of the set).
    When None, the hit is ``prediction == images.labels[i]``.
    """

    images: Images
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    label_sets: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True)
class CaptionSet:
    """Text-image retrieval: ``caption_image[t]`` is the row of caption t's image in ``images``.

    ``match_labels``: when True (``images.labels`` required), every image with the label of caption t's
    image is relevant to it (the lab: an emoji's name retrieves all vendors' drawings of it).
    """

    images: Images
    captions: tuple[str, ...]
    caption_image: np.ndarray  # (T,) int64
    match_labels: bool = False


BenchmarkData = RetrievalSet | RevisitedSet | KNNSet | ZeroShotSet | CaptionSet


@dataclass(frozen=True)
class Option:
    """One adapter option. ``parse`` turns a command-line string (or an already typed Python value) into
    the value, raising ValueError with the reason when it cannot."""

    parse: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    help: str = ""


@dataclass
class Benchmark(ABC):
    """One dataset. ``name`` is what ``--benchmarks`` accepts; ``family`` places it in Table 1;
    ``table1_metric`` is the key of the number Table 1 reports (e.g. ``map``, ``recall@1``, ``medium_map``,
    ``top1``, ``recall@5``); ``download`` says what to download, from where, and where to put it.

    ``options`` (validated and typed in ``__init__`` against ``option_specs``; unknown or missing required
    ones fail with ConfigError) select variants or, for the generic adapters, the user's folders and files.
    """

    name: ClassVar[str]
    family: ClassVar[Family]
    table1_metric: ClassVar[str]
    download: ClassVar[str] = ""
    option_specs: ClassVar[dict[str, Option]] = {}
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.options) - set(self.option_specs))
        if unknown:
            valid = ", ".join(sorted(self.option_specs)) or "none"
            raise ConfigError(
                f"Benchmark '{self.name}' has no option {', '.join(unknown)}; valid options: {valid}."
            )
        resolved = {}
        for key, spec in self.option_specs.items():
            if key in self.options:
                try:
                    resolved[key] = spec.parse(self.options[key])
                except (TypeError, ValueError) as exc:
                    raise ConfigError(
                        f"Benchmark '{self.name}': option {key}={self.options[key]!r}: {exc}"
                    ) from None
            elif spec.required:
                raise ConfigError(
                    f"Benchmark '{self.name}' needs the option '{key}' ({spec.help}), "
                    f"e.g. --benchmarks {self.name}:{key}=..."
                )
            else:
                resolved[key] = spec.default
        self.options = resolved

    @property
    def spec(self) -> str:
        """The name with every non-default option (``folder_knn:index=/a,queries=/b``): what
        :func:`mcip.eval.benchmarks.parse_benchmark_spec` reads back, and a key for caches and reports."""
        parts = [
            f"{key}={_format_option(value)}"
            for key, value in sorted(self.options.items())
            if value != self.option_specs[key].default
        ]
        return self.name + (":" + ",".join(parts) if parts else "")

    def missing(self, path: Path, problem: str = "not found") -> DatasetMissingError:
        """The error for this benchmark's missing ``path``, with its download instructions."""
        return dataset_missing(path, self.download, problem)

    @abstractmethod
    def check(self, root: Path) -> None:
        """Raise :class:`DatasetMissingError` (what to download, where to put it) unless the files exist."""

    @abstractmethod
    def load(self, root: Path) -> BenchmarkData:
        """Read the layout under ``root`` (files and labels only; no model, no image decoding)."""


def _format_option(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark")
