"""Uploaded-image queries: decoded within the image limits.

Decoding and resizing an upload is where its memory goes (the model encodes one query at a time under
the index's lock anyway), so the app runs :meth:`ImageSearch.search` (decode and query) inside one slot
of the uploads' own :class:`~mcip.serve.guard.QueryGate`: N concurrent uploads hold at most its
``concurrency`` decoded images, wait on the event loop (not in a thread) for a bounded time, and never
take the slots of text and id queries.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException

from mcip.data.limits import ImageLimits, check_resize
from mcip.serve.upload import decode_upload


class ImageSearch:
    """``index.search`` with an uploaded image.

    Args:
        index: the :class:`mcip.index.SearchIndex` (or anything with its ``search``).
        limits: formats, aspect ratio and pixels accepted (see :class:`mcip.data.limits.ImageLimits`).
    """

    def __init__(self, index, limits: ImageLimits) -> None:
        self.index, self.limits = index, limits

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
