"""Map-style datasets that never raise on a bad image, and the collate functions that report skips.

A truncated, corrupt or missing image becomes an item ``{"index": i, "error": "path: reason"}`` instead
of an exception; :func:`collate_images` drops it from the batch and lists it under ``skipped``;
the training loop (mcip.engine.progress.SkipCounter) adds them up and stops a mostly unreadable run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mcip.data.images import open_image
from mcip.data.records import ImageRecord, class_index
from mcip.errors import ConfigError

__all__ = [
    "ImageDataset",
    "collate_images",
    "decode_image",
]

Transform = Callable[[Any], Tensor]


def _decode_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image, UnidentifiedImageError

    # OverflowError, MemoryError: a resize too large for Pillow (the limits should refuse it first).
    bad = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)
    return (*bad, OverflowError, MemoryError)


def decode_image(source: str | os.PathLike | IO[bytes], transform: Transform, where: str) -> Tensor | str:
    """``transform(image)`` as a (3, S, S) tensor, or the error text ``"where: Type: message"``.

    Decoding is complete (a truncated file fails here); errors from the transform count as bad images,
    and so do images over :func:`~mcip.data.limits.default_image_limits` (format, aspect ratio, pixels;
    the reason is in the text). A transform with a ``draft_size`` (the models' eval transform) has JPEGs
    decoded at a reduced scale that still covers its resize; training transforms decode in full.
    """
    try:
        return transform(open_image(source, draft=getattr(transform, "draft_size", None)))
    except _decode_errors() as exc:
        return f"{where}: {type(exc).__name__}: {exc}"


def check_labels(records: Sequence[ImageRecord], class_to_index: Mapping[str, int]) -> None:
    """Fail if a record's label has no class index."""
    unknown = sorted({r.label for r in records} - set(class_to_index))
    if unknown:
        raise ConfigError(
            f"{len(unknown)} label(s) missing from class_to_index (e.g. '{unknown[0]}'); build it with "
            "mcip.data.class_index(records) over every record the dataset will see."
        )


class ImageDataset(Dataset):
    """Records -> ``{"pixels": (3, S, S), "label": int, "index": i}``, or ``{"index": i, "error": str}``.

    Args:
        records: the images.
        transform: PIL image -> (3, S, S) float tensor (the model's train or eval transform).
        class_to_index: label -> class index; default ``class_index(records)``.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Transform,
        class_to_index: Mapping[str, int] | None = None,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.class_to_index = dict(class_to_index) if class_to_index is not None else class_index(records)
        check_labels(self.records, self.class_to_index)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        pixels = decode_image(rec.path, self.transform, str(rec.path))
        if isinstance(pixels, str):
            return {"index": int(i), "error": pixels}
        return {"pixels": pixels, "label": self.class_to_index[rec.label], "index": int(i)}

    @property
    def labels(self) -> list[int]:
        """Class index of every record, in order (for ``ClassBalancedBatchSampler``)."""
        return [self.class_to_index[r.label] for r in self.records]


def collate_images(items: Sequence[Mapping]) -> dict:
    """Items of :class:`ImageDataset` / ``ShardDataset`` -> a batch without the unreadable ones.

    Returns ``{"pixels": (B, 3, S, S), "labels": (B,) long, "index": (B,) long, "skipped": [(index,
    error), ...]}`` where B counts only the readable items. When every item failed, ``pixels`` is
    ``None`` and ``labels`` / ``index`` have shape (0,): the loop counts ``skipped`` and moves on.
    """
    good = [it for it in items if "error" not in it]
    skipped = [(int(it["index"]), str(it["error"])) for it in items if "error" in it]
    return {
        "pixels": torch.stack([it["pixels"] for it in good]) if good else None,
        "labels": torch.tensor([it["label"] for it in good], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in good], dtype=torch.long),
        "skipped": skipped,
    }
