"""The unit of training data (one image with its class label and optional captions) and the row-level
parsing every reader shares: labels, captions and unique ids (manifests, shards, the index)."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mcip.errors import InputError


@dataclass(frozen=True)
class ImageRecord:
    """One training image.

    Attributes:
        id: unique key of the image (the manifest's ``id`` column, the path relative to the dataset
            root, or the webdataset sample key); caption sidecars are keyed by it.
        path: the image file; for a record read from webdataset shards, ``SHARD.tar#KEY`` (the sample
            inside its shard, see :mod:`mcip.data.shard_ref`), which opens like a file.
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


def label_text(value: object, where: str, column: str = "label", required: bool = True) -> str:
    """A manifest's label as its class name: a string, or a number as its text (``1`` -> ``"1"``).

    Refused, naming ``where`` (the file and row): null or NaN, lists, objects and other non-scalars, and
    (if ``required``) an empty label. Without ``required`` an empty string means "no label"; a null does not
    (write "" or leave the field out), so a missing value is never read as a class by accident.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        fix = (
            "every row needs a class label"
            if required
            else 'write "" for an image without a label, or leave the field out'
        )
        raise InputError(f"{where}: '{column}' is null; {fix}.")
    if not isinstance(value, str | int | float):
        raise InputError(
            f"{where}: '{column}' must be a string or a number, got {type(value).__name__} {value!r}; "
            "give one class name per row."
        )
    text = str(value).strip()
    if required and not text:
        raise InputError(f"{where}: empty '{column}'; every row needs a class label.")
    return text


def warn_mixed_labels(labels: Iterable[tuple[str, object]], source: object) -> None:
    """Warn once if the raw labels (``(where, value)`` pairs) mix numbers and strings: ``1`` and ``"1"``
    become the same class, which is rarely what a file that mixes them meant."""
    number = string = None
    for where, value in labels:
        if isinstance(value, str):
            string = string or (where, value)
        elif isinstance(value, int | float):
            number = number or (where, value)
        if number and string:
            warnings.warn(
                f"{source}: labels mix numbers ({number[1]!r} at {number[0]}) and strings ({string[1]!r} "
                f'at {string[0]}); numbers are read as their text, so 1 and "1" are one class. Write '
                "every label as a string to make this explicit.",
                stacklevel=3,
            )
            return


def parse_captions(value: object, where: str) -> tuple[str, ...]:
    """Captions from a list of strings, a JSON list string or a ``|``-separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{where}: captions look like a JSON list but do not parse ({exc})."
                ) from exc
        else:
            value = text.split("|")
    if not isinstance(value, list | tuple) or not all(isinstance(c, str) for c in value):
        raise InputError(f"{where}: captions must be a list of strings, got {value!r}.")
    return tuple(c.strip() for c in value if c.strip())


def check_unique_ids(records: list[ImageRecord], source: object) -> None:
    """Fail if two records share an id (captions and caches are keyed by it)."""
    counts = Counter(r.id for r in records)
    dupes = [i for i, c in counts.items() if c > 1]
    if dupes:
        raise InputError(
            f"{source}: {len(dupes)} duplicate image id(s), e.g. '{dupes[0]}' ({counts[dupes[0]]} rows). "
            "Ids must be unique: remove the repeated rows or add a unique 'id' column."
        )
