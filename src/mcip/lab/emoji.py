"""Emoji classes of the lab: one class per emoji and per skin-tone variant, with captions and vendor images.

Sources (inside the unpacked npm packages):

- ``emoji-datasource-<vendor>/package/emoji.json``: one entry per base emoji with ``unified`` (code points,
  e.g. ``1F44B``), ``name``, ``short_names``, ``category``, ``subcategory``, ``image`` (file name under
  ``img/<vendor>/64/``), ``has_img_<vendor>`` and ``skin_variations`` (tone key -> a variant with its own
  ``unified``, ``image`` and ``has_img_<vendor>``);
- ``emojibase-data/package/en/data.json``: English CLDR ``label`` and ``tags`` per ``hexcode``, with the
  skin-tone variants under ``skins`` (labels only; they share the base emoji's tags).

The two spell variation selectors differently (``2764-FE0F`` vs ``2764``), so codes are matched after
removing ``FE0F`` (:func:`normalize_code`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def normalize_code(code: str) -> str:
    """Upper-case code points joined by ``-``, without the variation selector ``FE0F``."""
    return "-".join(p for p in code.upper().split("-") if p and p != "FE0F")


@dataclass(frozen=True)
class EmojiClass:
    """One class: an emoji or one skin-tone variant of it.

    Attributes:
        label: the ``unified`` code of this exact variant (the class label).
        base: the ``unified`` code of the base emoji (all its variants share a split).
        category, subcategory: from emoji.json.
        captions: CLDR label, emoji.json name and short names, CLDR tags; deduplicated, in that order.
        images: vendor -> source PNG, for the vendors with ``has_img_<vendor>`` and the file present.
    """

    label: str
    base: str
    category: str
    subcategory: str
    captions: tuple[str, ...]
    images: dict[str, Path] = field(default_factory=dict)


def load_cldr(path: Path) -> dict[str, dict]:
    """Normalised hexcode -> ``{"label", "tags"}`` from emojibase ``en/data.json`` (skins included)."""
    table: dict[str, dict] = {}
    for entry in json.loads(path.read_text(encoding="utf-8")):
        tags = list(entry.get("tags") or [])
        table[normalize_code(entry["hexcode"])] = {"label": entry.get("label") or "", "tags": tags}
        for skin in entry.get("skins") or []:
            skin_tags = list(skin.get("tags") or tags)
            table[normalize_code(skin["hexcode"])] = {"label": skin.get("label") or "", "tags": skin_tags}
    return table


def _dedupe(texts: list[str]) -> tuple[str, ...]:
    seen, out = set(), []
    for text in texts:
        text = " ".join(str(text).split())
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return tuple(out)


def captions_for(entry: dict, code: str, cldr: dict[str, dict]) -> tuple[str, ...]:
    """Captions of variant ``code`` of emoji.json ``entry``: CLDR label, names, CLDR tags."""
    own = cldr.get(normalize_code(code)) or {}
    base = cldr.get(normalize_code(entry["unified"])) or {}
    names = [entry.get("name"), *(entry.get("names") or []), *(entry.get("short_names") or [])]
    texts = [own.get("label", "")]
    texts += [n.replace("_", " ").lower() for n in names if n]
    texts += own.get("tags") or base.get("tags") or []
    return _dedupe(texts)


def _variants(entry: dict) -> Iterator[dict]:
    """The base entry, then its skin-tone variants in sorted key order."""
    yield entry
    variations = entry.get("skin_variations") or {}
    for key in sorted(variations):
        yield variations[key]


def read_vendor_images(package: Path, vendor: str) -> dict[str, Path]:
    """Variant code -> PNG in ``img/<vendor>/64/`` for variants with ``has_img_<vendor>`` and the file present."""
    key, out = f"has_img_{vendor}", {}
    for entry in json.loads((package / "emoji.json").read_text(encoding="utf-8")):
        for variant in _variants(entry):
            path = package / "img" / vendor / "64" / str(variant.get("image", ""))
            if variant.get(key, entry.get(key)) and path.is_file():
                out[variant["unified"]] = path
    return out


def build_classes(packages: dict[str, Path], cldr: dict[str, dict]) -> list[EmojiClass]:
    """All classes (emoji and skin-tone variants) over the vendor packages, sorted by label.

    Metadata comes from the first vendor (sorted by name) that lists the code; ``images`` from each
    vendor's own ``emoji.json``. Classes with fewer than two images are kept here; the caller filters.
    """
    meta: dict[str, dict] = {}
    images: dict[str, dict[str, Path]] = {}
    for vendor in sorted(packages):
        for entry in json.loads((packages[vendor] / "emoji.json").read_text(encoding="utf-8")):
            for variant in _variants(entry):
                meta.setdefault(variant["unified"], entry)
        for code, path in read_vendor_images(packages[vendor], vendor).items():
            images.setdefault(code, {})[vendor] = path
    return [
        EmojiClass(
            label=code,
            base=entry["unified"],
            category=entry.get("category") or "",
            subcategory=entry.get("subcategory") or "",
            captions=captions_for(entry, code, cldr),
            images=dict(sorted(images.get(code, {}).items())),
        )
        for code, entry in sorted(meta.items())
    ]
