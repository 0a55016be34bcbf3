"""Validating the same val data at many alphas cheaply (mcip.wise.curve).

Every alpha changes the image side, so the image tower runs once per alpha; what does not change is done
once: the val images are decoded (eval transform) once when their pixels fit in ``PIXEL_BUDGET_BYTES``,
and, when the merge leaves the text side untouched, each caption / prompt batch is encoded once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from mcip.data.dataset import decode_image
from mcip.data.records import ImageRecord
from mcip.engine.validate import cached_rows, encode_records
from mcip.models.base import EmbeddingModel

PIXEL_BUDGET_BYTES = 1 << 30  # decoded val pixels kept in memory (float32) up to this size


class ValImages:
    """``encode(model) -> ((M, D) L2-normalised embeddings, (M,) indices into val)`` of the readable val
    images, as :func:`mcip.engine.validate.encode_records` computes them, without decoding again. With a
    ``cache_dir`` in which the models' frozen image stem is registered (:mod:`mcip.image_stems`: the
    merge of a model trained with ``freeze_image_groups`` and its start keeps that stem), only the encoder
    above the stem runs, on its cached activations; otherwise the val images are decoded once (when their
    pixels fit ``budget``) and the whole encoder runs per alpha."""

    def __init__(
        self,
        model: EmbeddingModel,
        val: Sequence[ImageRecord],
        batch_size: int = 64,
        budget: int = PIXEL_BUDGET_BYTES,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.val, self.batch_size, self.cache_dir = list(val), batch_size, cache_dir
        self.pixels: torch.Tensor | None = None
        self.rows = torch.zeros(0, dtype=torch.long)
        self.stems = None  # the val images' ImageStems, once a model with a registered stem asked
        self._fits = len(self.val) * 3 * model.image_size**2 * 4 <= budget
        self._decoded = False

    def _stems_for(self, model: EmbeddingModel):
        if self.cache_dir is None:
            return None
        if self.stems is None or not self.stems.matches(model):
            from mcip.image_stems import image_stems

            self.stems = image_stems(model, [r.path for r in self.val], self.cache_dir)
        return self.stems

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
        stems = self._stems_for(model)
        if stems is not None:
            return cached_rows(stems.embeddings(model, batch_size=self.batch_size), range(len(self.val)))
        if self._fits and not self._decoded:
            self._decoded = True
            self._decode(model)
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
