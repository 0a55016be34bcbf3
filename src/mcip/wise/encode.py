"""Validating the same val data at many alphas cheaply (mcip.wise.curve).

Every alpha changes the image side, so the image tower runs once per alpha; what does not change is done
once: the val images are decoded (eval transform) once when their pixels fit in ``PIXEL_BUDGET_BYTES``,
and, when the merge leaves the text side untouched, each caption / prompt batch is encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mcip.data.dataset import decode_image
from mcip.data.records import ImageRecord
from mcip.engine.validate import encode_records
from mcip.models.base import EmbeddingModel

PIXEL_BUDGET_BYTES = 1 << 30  # decoded val pixels kept in memory (float32) up to this size


class ValImages:
    """``encode(model) -> ((M, D) L2-normalised embeddings, (M,) indices into val)`` of the readable val
    images, as :func:`mcip.engine.validate.encode_records` computes them, without decoding again."""

    def __init__(
        self,
        model: EmbeddingModel,
        val: Sequence[ImageRecord],
        batch_size: int = 64,
        budget: int = PIXEL_BUDGET_BYTES,
    ) -> None:
        self.val, self.batch_size = list(val), batch_size
        self.pixels: torch.Tensor | None = None
        self.rows = torch.zeros(0, dtype=torch.long)
        if len(self.val) * 3 * model.image_size**2 * 4 <= budget:
            self._decode(model)

    def _decode(self, model: EmbeddingModel) -> None:
        transform, kept, rows = model.eval_transform, [], []
        for i, record in enumerate(self.val):
            decoded = decode_image(record.path, transform, str(record.path))
            if not isinstance(decoded, str):  # a string is the reason it could not be read
                kept.append(decoded)
                rows.append(i)
        if kept:
            self.pixels, self.rows = torch.stack(kept), torch.tensor(rows, dtype=torch.long)
        else:
            self.pixels = torch.zeros(0, 3, model.image_size, model.image_size)

    @torch.no_grad()
    def encode(self, model: EmbeddingModel) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pixels is None:
            return encode_records(model, self.val, self.batch_size)
        if not len(self.pixels):
            return torch.zeros(0, model.embed_dim), self.rows
        chunks = [
            model.encode_image(self.pixels[s : s + self.batch_size]).float().cpu()
            for s in range(0, len(self.pixels), self.batch_size)
        ]
        return torch.cat(chunks), self.rows


class FrozenText:
    """``model`` as validation sees it, with ``encode_text`` memoised per batch of texts: only for a merge
    that leaves the text side unchanged (then every alpha has the same text embeddings). Everything
    else is passed through to ``model``."""

    def __init__(self, model: EmbeddingModel) -> None:
        self._model = model
        self._memo: dict[tuple, torch.Tensor] = {}

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def encode_text(self, texts, normalize: bool = True) -> torch.Tensor:
        if isinstance(texts, dict):  # tokenizer output: not memoised
            return self._model.encode_text(texts, normalize)
        key = (tuple(texts), normalize)
        if key not in self._memo:
            self._memo[key] = self._model.encode_text(list(texts), normalize).detach()
        return self._memo[key]
