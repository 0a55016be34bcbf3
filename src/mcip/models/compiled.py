"""The image tower through ``torch.compile`` for long encoding jobs (opt-in: ``mcip encode --compile``).

:func:`image_encoder` gives the function an encoder calls on each batch of pixels: ``model.encode_image``
itself, or a :class:`CompiledImageEncoder`. The compiled one pads every batch to one size (the last,
partial batch repeats its last image and drops the extra rows), so the network compiles once for a whole
job instead of once more for the last batch. Compiling costs seconds to tens of seconds before the first
batch (the lab's EfficientNet-Lite0 at 128 px on 2 CPU cores: 34 s in a fresh process, 10 s with
inductor's on-disk cache warm); its forward pass then ran 1.73x faster there, embeddings equal to float
rounding (``benchmarks/encode.py``: least cosine 1.000000). It pays off on large collections, where the
network and not decoding is the bottleneck. When compiling fails (a Python or platform torch.compile
does not support, no C++ compiler for the CPU backend, an operator the compiler cannot handle) the job
says why in one line and goes on uncompiled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from mcip.errors import ConfigError, InputError

if TYPE_CHECKING:
    from mcip.models.base import EmbeddingModel

log = logging.getLogger(__name__)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else 'no message'}"


class CompiledImageEncoder:
    """``model.encode_image`` compiled for (B, 3, S, S) batches of exactly ``batch_size`` (smaller ones
    are padded); anything else (a list of PIL images, a larger batch) runs uncompiled.

    Falls back to the uncompiled ``model.encode_image`` (logged once) when ``torch.compile`` refuses, or
    when compiling or running the compiled function raises on the first batch; a failure after a first
    success is raised, as are mcip's input errors."""

    def __init__(self, model: EmbeddingModel, batch_size: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be 1 or more, got {batch_size}.")
        self.model, self.batch_size = model, batch_size
        self._proven = False
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        try:  # some platforms refuse here already (torch's check_if_dynamo_supported)
            self.compiled = torch.compile(model.encode_image, dynamic=False)
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        log.warning(
            "torch.compile could not compile the image tower (%s); encoding without it.", _reason(exc)
        )
        self.compiled = None

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        n = len(pixels)
        if self.compiled is None or not torch.is_tensor(pixels) or n > self.batch_size or n == 0:
            return self.model.encode_image(pixels)
        if n < self.batch_size:  # one shape for the whole job: pad with copies of the last image
            pixels = torch.cat([pixels, pixels[-1:].expand(self.batch_size - n, *pixels.shape[1:])])
        try:
            out = self.compiled(pixels)
        except InputError:
            raise
        except Exception as exc:
            if self._proven:
                raise
            self._give_up(exc)
            return self.model.encode_image(pixels[:n])
        self._proven = True
        return out[:n]


def image_encoder(
    model: EmbeddingModel, compile: bool = False, batch_size: int = 64
) -> Callable[[torch.Tensor], torch.Tensor]:
    """What encoders call on each (B, 3, S, S) batch: ``model.encode_image``, or with ``compile`` a
    :class:`CompiledImageEncoder` for batches of at most ``batch_size``."""
    return CompiledImageEncoder(model, batch_size) if compile else model.encode_image
