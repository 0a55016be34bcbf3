"""A cheap readability probe, to explain a failure that unreadable images cause.

Training decodes images lazily and skips unreadable ones, so a manifest whose images are all missing or
corrupt would only show up as "too few items" or empty batches. When a stage finds too little data it
decodes the first few images of its source (:data:`PROBE_LIMIT`, a fraction of a second) and names the
unreadable ones with the reason, as ``mcip index build`` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mcip.data.dataset import decode_image
from mcip.data.records import ImageRecord

PROBE_LIMIT = 32
MAX_LISTED = 3


def unreadable_images(records: Sequence[ImageRecord], limit: int = PROBE_LIMIT) -> dict[str, str]:
    """``path -> reason`` for the images among the first ``limit`` records that do not decode."""
    out = {}
    for record in records[:limit]:
        decoded = decode_image(record.path, lambda image: image, str(record.path))
        if isinstance(decoded, str):
            out[str(record.path)] = decoded
    return out


def describe_unreadable(
    source: str | os.PathLike,
    root: str | os.PathLike | None = None,
    encoding: str | None = None,
    limit: int = PROBE_LIMIT,
) -> str:
    """A sentence naming the unreadable images among the first ``limit`` of ``source`` (a manifest or an
    image folder) and the fix; ``""`` if they all decode."""
    from mcip.data.manifest import load_records

    records = load_records(source, root, encoding)[:limit]
    bad = unreadable_images(records, limit)
    if not bad:
        return ""
    listed = "; ".join(
        reason if reason.startswith(path) else f"{path}: {reason}"
        for path, reason in list(bad.items())[:MAX_LISTED]
    )
    more = f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
    return (
        f"{len(bad)} of the first {len(records)} images of {source} cannot be read: {listed}{more}. Fix the "
        "files or the paths (relative paths start at data.root, default the manifest's folder)."
    )
