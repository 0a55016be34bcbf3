"""The unit of training data: one image with its class label and optional captions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageRecord:
    """One training image.

    Attributes:
        id: unique key of the image (the manifest's ``id`` column, the path relative to the dataset
            root, or the webdataset sample key); caption sidecars are keyed by it.
        path: the image file; for a record read from webdataset shards, the ``.tar`` shard holding it.
        label: class name, kept as a string; :func:`class_index` maps labels to ``0..C-1``.
        captions: caption texts, in order of preference (may be empty).
    """

    id: str
    path: Path
    label: str
    captions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "captions", tuple(self.captions))


def class_index(records: Iterable[ImageRecord]) -> dict[str, int]:
    """Sorted class labels mapped to ``0..C-1`` (the same mapping whatever the record order)."""
    return {label: i for i, label in enumerate(sorted({r.label for r in records}))}
