"""Validation on the held-out classes of the training data (never on an evaluation benchmark).

- ``i2i_map``: every val image queries all val images, itself included (GPR1200 protocol), mAP in %.
- ``t2i_r1/r5/r10``: every val caption retrieves among the val images, Recall@k in %.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from mcip.data.records import ImageRecord, class_index
from mcip.embed import encode_images
from mcip.eval.metrics import retrieval_average_precision, text_to_image_recall
from mcip.models.base import EmbeddingModel

MAX_VAL_CAPTIONS = 10_000


def encode_records(model: EmbeddingModel, records: Sequence[ImageRecord], batch_size: int = 64):
    """(M, D) embeddings of the readable records and the (M,) indices of those records."""
    encoded = encode_images(model, [r.path for r in records], batch_size=batch_size, progress=False)
    return torch.from_numpy(encoded.embeddings), torch.tensor(encoded.rows, dtype=torch.long)


def _eval_mode(model: EmbeddingModel):
    was = model.training
    model.eval()
    return lambda: model.train(was)


@torch.no_grad()
def encode_shards(
    model: EmbeddingModel, shards: Sequence[str], classes: dict[str, int], batch_size: int = 64
):
    """(M, D) embeddings and (M,) class indices of the shard samples whose label is in ``classes``."""
    from mcip.data import ShardDataset, collate_images

    dataset = ShardDataset(shards, model.eval_transform, classes, shuffle_buffer=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images)
    chunks, labels = [], []
    for batch in loader:
        if batch["pixels"] is not None:
            chunks.append(model.encode_image(batch["pixels"].to(model.device)).float().cpu())
            labels.append(batch["labels"])
    if not chunks:
        return torch.zeros(0, model.embed_dim), torch.zeros(0, dtype=torch.long)
    return torch.cat(chunks), torch.cat(labels)


def i2i_validator(
    model: EmbeddingModel, val: Sequence[ImageRecord], shards: Sequence[str] | None
) -> Callable | None:
    """``val`` records (held-out classes); ``shards``: read their images from tar shards instead of paths."""
    if not val:
        return None
    classes = class_index(val)

    def validate(_task) -> dict[str, float]:
        restore = _eval_mode(model)
        if shards is not None:
            emb, labels = encode_shards(model, shards, classes)
        else:
            emb, rows = encode_records(model, val)
            labels = torch.tensor([classes[val[i].label] for i in rows.tolist()], dtype=torch.long)
        restore()
        return {"i2i_map": 100 * float(retrieval_average_precision(emb, labels).nanmean())}

    return validate


def t2i_validator(
    model: EmbeddingModel, val: Sequence[ImageRecord], cached: np.ndarray | None
) -> Callable | None:
    val = [r for r in val if r.captions]
    if not val:
        return None
    texts = [(i, c) for i, r in enumerate(val) for c in r.captions][:MAX_VAL_CAPTIONS]

    @torch.no_grad()
    def validate(_task) -> dict[str, float]:
        restore = _eval_mode(model)
        if cached is not None:
            images = torch.from_numpy(np.asarray(cached, dtype=np.float32))
            keep = ~torch.isnan(images[:, 0])
            rows = torch.arange(len(val))[keep]
            images = images[keep]
        else:
            images, rows = encode_records(model, val)
        position = {int(r): k for k, r in enumerate(rows.tolist())}
        usable = [(position[i], c) for i, c in texts if i in position]
        text = torch.cat(
            [
                model.encode_text([c for _, c in usable[s : s + 256]]).float().cpu()
                for s in range(0, len(usable), 256)
            ]
        )
        owner = torch.tensor([p for p, _ in usable])
        restore()
        recall = text_to_image_recall(text, images, owner, ks=(1, 5, 10))
        return {f"t2i_r{k}": 100 * v for k, v in recall.items()}

    return validate
