"""Captions from class names and templates ("a photo of a {}."), the fallback when nothing else exists."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from mcip.data.captions import write_caption_sidecar
from mcip.data.records import ImageRecord
from mcip.errors import InputError


def default_templates() -> tuple[str, ...]:
    """The 80 OpenAI ImageNet prompt templates (from open_clip), with ``{}`` for the class name."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


def read_templates(source: str | os.PathLike) -> tuple[str, ...]:
    """``default`` or a file with one template per line, each containing ``{}``."""
    if str(source) == "default":
        return default_templates()
    lines = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [t for t in lines if "{}" not in t]
    if not lines or bad:
        raise InputError(
            f"{source}: every template needs '{{}}' for the class name (e.g. 'a photo of a {{}}.')."
        )
    return tuple(lines)


def read_class_names(path: str | os.PathLike, labels: Sequence[str]) -> dict[str, str]:
    """Label -> class name. Lines are ``label<TAB>name``; labels without a line keep their own text
    (underscores become spaces). Unknown labels in the file are an error (a typo would go unnoticed)."""
    names = {label: label.replace("_", " ") for label in labels}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, name = line.partition("\t")
        if not sep or not name.strip():
            raise InputError(f"{path}:{n}: expected 'label<TAB>name', got {line!r}.")
        if label not in names:
            raise InputError(f"{path}:{n}: label {label!r} is not a class of the manifest.")
        names[label] = name.strip()
    return names


def _pick(templates: Sequence[str], k: int, key: str) -> list[str]:
    """``k`` templates chosen deterministically per image (a hash of its id), so images of one class
    get different wordings."""
    if k >= len(templates):
        return list(templates)
    ranked = sorted(templates, key=lambda t: hashlib.blake2b(f"{key}|{t}".encode(), digest_size=8).digest())
    return ranked[:k]


def template_captions(
    records: Sequence[ImageRecord],
    out: str | os.PathLike,
    names: dict[str, str] | None = None,
    templates: Sequence[str] | None = None,
    per_image: int = 10,
) -> int:
    """Append ``per_image`` template captions per record to the sidecar ``out``; returns captions written.

    Source ``template``, score None. Records already in ``out`` are skipped (resume).
    """
    from mcip.data.captions import read_caption_sidecar

    templates = tuple(templates or default_templates())
    names = names or {r.label: r.label.replace("_", " ") for r in records}
    done = set(read_caption_sidecar(out)) if Path(out).is_file() else set()
    written = 0
    batch: dict[str, list[dict]] = {}
    for r in records:
        if r.id in done:
            continue
        texts = [t.replace("{}", names[r.label]) for t in _pick(templates, per_image, r.id)]
        batch[r.id] = [{"text": t, "source": "template", "score": None} for t in texts]
        written += len(texts)
        if len(batch) >= 1000:
            write_caption_sidecar(out, batch)
            batch = {}
    if batch:
        write_caption_sidecar(out, batch)
    return written
