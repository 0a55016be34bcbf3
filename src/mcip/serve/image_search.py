"""Uploaded-image queries: decoded within the image limits, a bounded number at a time.

Decoding and resizing an upload is where its memory goes (the model encodes one query at a time under
the index's lock anyway), so the decode runs inside the same bounded slot as the query: N concurrent
uploads hold at most ``concurrency`` decoded images. Requests waiting for a slot wait on the event loop,
not in a thread, so text and id queries keep the thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from starlette.exceptions import HTTPException

from mcip.data.limits import ImageLimits, check_resize
from mcip.serve.upload import decode_upload

T = TypeVar("T")


class ImageSearch:
    """``index.search`` with an uploaded image, at most ``concurrency`` at a time.

    Args:
        index: the :class:`mcip.index.SearchIndex` (or anything with its ``search``).
        limits: formats, aspect ratio and pixels accepted (see :class:`mcip.data.limits.ImageLimits`).
        concurrency: uploads decoded and encoded at once.
    """

    def __init__(self, index, limits: ImageLimits, concurrency: int = 1) -> None:
        self.index, self.limits, self.concurrency = index, limits, int(concurrency)
        self._limiter = None  # made on first use: it needs a running event loop on older anyio

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread once a slot is free."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        return await anyio.to_thread.run_sync(work, limiter=self._limiter)

    def search(self, image: bytes, text: str | None, alpha: float, k: int, where=None) -> list:
        """Decode ``image`` (HTTPException 415 / 400 when refused) and search with it (and ``text``).

        An error of the resize or the model that the limits did not foresee (OverflowError, MemoryError)
        is the upload's, so 400, not 500.
        """
        decoded = decode_upload(image, self.limits, self.index.image_draft_size())
        try:
            self._check_resize(decoded.size)
            return self.index.search(text=text, image=decoded, alpha=alpha, k=k, where=where)
        except (OverflowError, MemoryError) as exc:
            raise HTTPException(
                400, f"The uploaded image is too large to process ({type(exc).__name__}); scale it down."
            ) from None
        finally:
            decoded.close()

    def _check_resize(self, size: tuple[int, int]) -> None:
        """``limits.max_resized_pixels`` for the model's resize (its transform checks the process-wide
        default again)."""
        config = getattr(getattr(self.index, "model", None), "image_config", None)
        if config is not None:
            check_resize(size, round(config.resize_ratio * config.size), self.limits)
