"""What a caption sidecar holds: captions per image (min / median / max), images without captions,
sources, the most frequent captions, and their diversity (:mod:`mcip.captions.diversity`: a sidecar
dominated by a few captions is worth a warning before training on it)."""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence

from mcip.captions.diversity import CaptionDiversity, caption_diversity, format_diversity
from mcip.data.captions import read_caption_entries
from mcip.data.records import ImageRecord


def summarize(
    entries_by_id: Mapping[str, Sequence[Mapping]],
    top: int = 5,
    records: Sequence[ImageRecord] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict:
    """Counts, sources, the ``top`` most frequent captions and ``diversity``
    (:meth:`~mcip.captions.diversity.CaptionDiversity.as_dict`; per class when ``records`` give labels)."""
    counts = [len(e) for e in entries_by_id.values()]
    texts = Counter(e["text"] for entries in entries_by_id.values() for e in entries)
    sources = Counter(str(e.get("source")) for entries in entries_by_id.values() for e in entries)
    return {
        "images": len(counts),
        "captions": sum(counts),
        "images_without_captions": sum(c == 0 for c in counts),
        "per_image": {
            "min": min(counts, default=0),
            "median": statistics.median(counts) if counts else 0,
            "max": max(counts, default=0),
        },
        "sources": dict(sources.most_common()),
        "most_frequent": texts.most_common(top),
        "diversity": caption_diversity(entries_by_id, records, names).as_dict(),
    }


def summarize_file(
    path: str | os.PathLike,
    top: int = 5,
    records: Sequence[ImageRecord] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict:
    return summarize(read_caption_entries(path), top, records, names)


def format_summary(summary: dict) -> str:
    p = summary["per_image"]
    lines = [
        f"{summary['images']} images, {summary['captions']} captions; per image min {p['min']}, median "
        f"{p['median']}, max {p['max']}; {summary['images_without_captions']} image(s) without captions",
        "sources: " + ", ".join(f"{k} ({v})" for k, v in summary["sources"].items()),
        "most frequent: " + "; ".join(f"'{t}' x{n}" for t, n in summary["most_frequent"]),
    ]
    if "diversity" in summary:
        lines.append(format_diversity(diversity_of(summary)))
    return "\n".join(lines)


def diversity_of(summary: dict) -> CaptionDiversity:
    """The :class:`CaptionDiversity` back from a summary's ``diversity`` entry."""
    d = dict(summary["diversity"])
    d.pop("degenerate", None)
    for key in ("most_frequent", "other_class_examples"):
        d[key] = tuple(tuple(pair) for pair in d[key])
    d["problems"] = tuple(d["problems"])
    return CaptionDiversity(**d)
