"""The image tower through ``torch.compile`` for long encoding jobs (opt-in: ``mcip encode --compile``).

:func:`image_encoder` gives the function an encoder calls on each batch of pixels: ``model.encode_image``
itself, or a :class:`CompiledImageEncoder`. The compiled one pads every batch to one size (the last,
partial batch repeats its last image and drops the extra rows), so the network compiles once for a whole
job instead of once more for the last batch. Compiling costs tens of seconds before the first batch (34 s
for the lab's EfficientNet-Lite0 at 128 px on 2 CPU cores) and made its forward pass 1.28x faster there
with embeddings equal to float rounding (least cosine 0.99999988): it pays off on tens of thousands of
images (``benchmarks/encode.py`` measures it). When compilation fails (no C++ compiler for the CPU
backend, an operator the compiler does not support) the job says why once and goes on uncompiled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from mcip.errors import ConfigError

if TYPE_CHECKING:
    from mcip.models.base import EmbeddingModel

log = logging.getLogger(__name__)


class CompiledImageEncoder:
    """``model.encode_image`` compiled for batches of exactly ``batch_size`` (smaller ones are padded).

    Falls back to the uncompiled ``model.encode_image`` (logged once) when compiling or running the
    compiled function raises on the first batch; a failure after a first success is re-raised."""

    def __init__(self, model: EmbeddingModel, batch_size: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be 1 or more, got {batch_size}.")
        self.model, self.batch_size = model, batch_size
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = torch.compile(
            model.encode_image, dynamic=False
        )
        self._proven = False

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        n = len(pixels)
        if self.compiled is None or n > self.batch_size or n == 0:
            return self.model.encode_image(pixels)
        if n < self.batch_size:  # one shape for the whole job: pad with copies of the last image
            pixels = torch.cat([pixels, pixels[-1:].expand(self.batch_size - n, *pixels.shape[1:])])
        try:
            out = self.compiled(pixels)
        except Exception as exc:
            if self._proven:
                raise
            log.warning(
                "torch.compile could not compile the image tower (%s: %s); encoding without it.",
                type(exc).__name__,
                str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "no message",
            )
            self.compiled = None
            return self.model.encode_image(pixels[:n])
        self._proven = True
        return out[:n]


def image_encoder(
    model: EmbeddingModel, compile: bool = False, batch_size: int = 64
) -> Callable[[torch.Tensor], torch.Tensor]:
    """What encoders call on each (B, 3, S, S) batch: ``model.encode_image``, or with ``compile`` a
    :class:`CompiledImageEncoder` for batches of at most ``batch_size``."""
    return CompiledImageEncoder(model, batch_size) if compile else model.encode_image
