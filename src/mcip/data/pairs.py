"""Image-caption pairs for contrastive stages: one item per captioned image, a caption drawn per visit.

Drawing one caption per image per epoch (instead of one item per caption) keeps an image from
appearing twice in a batch, where its second caption would be a false negative for InfoNCE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from mcip.data.records import ImageRecord


class SampledCaptionDataset(Dataset):
    """Item j: ``{"image_index": i, "text": one of record i's captions}`` (+ the image's pixels when an
    image dataset over the same records is given; an unreadable image yields ``{"error": ...}``).

    The caption is drawn with torch's global RNG, which :class:`~mcip.data.ResumableLoader` seeds per
    item from (seed, epoch, position), so a resumed run draws the same captions.
    """

    def __init__(self, records: Sequence[ImageRecord], images: Dataset | None = None) -> None:
        self.records = records
        self.images = images
        self.keep = [i for i, r in enumerate(records) if r.captions]
        counts = [len(r.captions) for r in records]
        self.offsets = [0]
        for n in counts:
            self.offsets.append(self.offsets[-1] + n)

    def __len__(self) -> int:
        return len(self.keep)

    @property
    def rngs_used(self) -> tuple[str, ...]:
        """The generators an item draws from (what a seeded loader seeds per item): torch's for the
        caption; with images, also whatever their augmentation uses."""
        if self.images is None:
            return ("torch",)
        from mcip.data.seeding import rngs_of

        return tuple(dict.fromkeys(("torch", *rngs_of(self.images))))

    def __getitem__(self, j: int) -> dict:
        i = self.keep[j]
        captions = self.records[i].captions
        k = int(torch.randint(len(captions), ()))
        # caption_index: the caption's row among all records' captions in order (cached text features)
        item = {"image_index": i, "text": captions[k], "caption_index": self.offsets[i] + k}
        if self.images is not None:
            image = self.images[i]
            if "error" in image:
                return {"index": i, "error": image["error"]}
            item["pixels"] = image["pixels"]
        return item


class CollatePairs:
    """Collate for :class:`SampledCaptionDataset` (a class, so DataLoader workers can pickle it):
    ``image_index (B,)``, ``caption_index (B,)``, ``tokens`` (dict of (B, L)), ``pixels (B,3,S,S)`` when present, ``skipped``
    [(index, error)]; zero rows when every item failed."""

    def __init__(self, tokenize: Callable[[list[str]], dict[str, torch.Tensor]]) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list[dict]) -> dict:
        good = [it for it in items if "error" not in it]
        skipped = [(it["index"], it["error"]) for it in items if "error" in it]
        if not good:  # nothing readable: the loop counts the skips and moves on
            return {"image_index": torch.zeros(0, dtype=torch.long), "skipped": skipped}
        batch = {
            "image_index": torch.tensor([it["image_index"] for it in good], dtype=torch.long),
            "caption_index": torch.tensor([it.get("caption_index", -1) for it in good], dtype=torch.long),
            "tokens": self.tokenize([it["text"] for it in good]),
            "skipped": skipped,
        }
        if "pixels" in good[0]:
            batch["pixels"] = torch.stack([it["pixels"] for it in good])
        return batch
