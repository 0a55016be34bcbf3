"""What a caption sidecar holds: captions per image (min / median / max), images without captions,
sources, and the most frequent captions (a pool dominated by one caption is worth knowing about)."""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence

from mcip.data.captions import read_caption_entries


def summarize(entries_by_id: Mapping[str, Sequence[Mapping]], top: int = 5) -> dict:
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
    }


def summarize_file(path: str | os.PathLike, top: int = 5) -> dict:
    return summarize(read_caption_entries(path), top)


def format_summary(summary: dict) -> str:
    p = summary["per_image"]
    lines = [
        f"{summary['images']} images, {summary['captions']} captions; per image min {p['min']}, median "
        f"{p['median']}, max {p['max']}; {summary['images_without_captions']} image(s) without captions",
        "sources: " + ", ".join(f"{k} ({v})" for k, v in summary["sources"].items()),
        "most frequent: " + "; ".join(f"'{t}' x{n}" for t, n in summary["most_frequent"]),
    ]
    return "\n".join(lines)
