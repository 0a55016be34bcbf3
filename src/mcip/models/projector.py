"""Text-projector surgery: after ``drop_projector`` the image embedding is the image tower's output, whose
width may differ from the text embedding's; Re-A then needs a new text projector of the right width."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mcip.data.records import ImageRecord
from mcip.models.base import EmbeddingModel


def text_matches_image(model: EmbeddingModel) -> bool:
    """True when text embeddings live in the image embedding's space (not after drop_projector)."""
    with torch.no_grad():
        return model.encode_text(["a"]).shape[-1] == model.embed_dim


def match_text_width(
    model: EmbeddingModel, records: Sequence[ImageRecord], features, init: str = "lstsq"
) -> bool:
    """Replace the text projector when its width differs from the image embedding's: a least-squares fit
    of (first caption's text features -> image embedding) over ``records`` and their image ``features``
    (``init="lstsq"``), or random (``"random"``). Returns whether the projector was replaced."""
    if text_matches_image(model):
        return False
    weight = lstsq_text_projector(model, records, features) if init == "lstsq" else None
    model.replace_text_projector(model.embed_dim, weight)
    return True


@torch.no_grad()
def lstsq_text_projector(
    model: EmbeddingModel, records: Sequence[ImageRecord], features, max_pairs: int = 8192
) -> torch.Tensor:
    """(F_txt, D) minimising ||text_features W - image_embedding||^2 over (first caption, image) pairs."""
    n = min(len(records), max_pairs)
    texts = [r.captions[0] for r in records[:n]]
    feats = (
        torch.cat(
            [
                model.text_features(
                    {k: v.to(model.device) for k, v in model.tokenize(texts[i : i + 256]).items()}
                )
                for i in range(0, n, 256)
            ]
        )
        .float()
        .cpu()
    )
    target = torch.from_numpy(np.asarray(features[:n], dtype=np.float32))
    return torch.linalg.lstsq(feats, target).solution
