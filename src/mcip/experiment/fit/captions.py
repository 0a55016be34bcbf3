"""The pseudo-captions of ``mcip fit`` and the policy that acts on them.

Two caption sets (sidecars under ``OUT/captions``), one per *policy*; the recipe search decides on val
which one MCIP trains on (:mod:`mcip.experiment.fit.search`):

- ``own+templates``: each image's own captions (the manifest's) and class-name templates;
- ``own+templates+retrieved``: the same with captions retrieved from ``--pool`` by the base model, after
  the filters below (offered only with a pool, and only when the filtered set is not degenerate).

Retrieved captions are filtered (each drop counted in ``captions/summary.json`` and said in the log):

1. *below the noise*: a caption is kept only when its cosine exceeds the pool's noise level for the
   collection, ``median + 3 * 1.4826 * MAD`` of the scores of (image, pool text) pairs (a robust
   "3 standard deviations above what an unrelated text scores"), and at least ``--min-sim``;
2. *another class's own text*: a retrieved caption equal (case and punctuation aside) to another class's
   name or to the own caption of a train image of another class, and not to one of its own class: it
   teaches the model to confuse the two products;
3. *names another class*: it names another class as whole words (``mcip.captions.diversity``'s rule) and
   not its own;
4. *generic*: a caption left on more than :data:`MAX_CAPTION_CLASSES` classes, or on more than
   :data:`MAX_CAPTION_SHARE` of the images across more than one class: it would pull unrelated products
   towards one text (the degeneracy the diversity check reports).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

POLICY_OWN = "own+templates"
POLICY_RETRIEVED = "own+templates+retrieved"
MAX_CAPTIONS_PER_IMAGE = 20
MAX_CAPTION_CLASSES = 3
MAX_CAPTION_SHARE = 0.05
NOISE_MADS = 3.0
NOISE_SAMPLE_IMAGES = 512
LOG = Callable[[str], None]


@dataclass
class CaptionSets:
    """The sidecars by policy, the policy the search starts from, and what was done (JSON-able)."""

    files: dict[str, Path]
    default: str
    summary: dict = field(default_factory=dict)

    @property
    def policies(self) -> tuple[str, ...]:
        """The default first (the search's grid trains with it)."""
        return (self.default, *(p for p in self.files if p != self.default))


def normalise(text: str) -> str:
    """Case, surrounding punctuation and runs of white space aside."""
    return re.sub(r"\s+", " ", text.casefold()).strip(" .,;:!?\"'")


def noise_threshold(image_emb: np.ndarray, pool_emb: np.ndarray) -> float:
    """``median + NOISE_MADS * 1.4826 * MAD`` of all cosines between the (normalised) image and pool
    embeddings given: the score an unrelated text rarely exceeds (1.4826 * MAD estimates the standard
    deviation of a normal distribution robustly; matching texts are a small minority of the pairs)."""
    scores = (np.asarray(image_emb, np.float64) @ np.asarray(pool_emb, np.float64).T).ravel()
    median = float(np.median(scores))
    mad = float(np.median(np.abs(scores - median)))
    return median + NOISE_MADS * 1.4826 * mad


def filter_retrieved(
    retrieved: Mapping[str, list[dict]],
    label_of: Mapping[str, str],
    own_texts: Mapping[str, set[str]],
    names: Mapping[str, str],
    threshold: float,
) -> tuple[dict[str, list[dict]], Counter]:
    """Apply filters 1-4 of the module docstring. ``own_texts``: label -> the normalised names and own
    captions of that class. Returns (kept entries by image id, drops counted by reason)."""
    from mcip.captions.diversity import _ClassNames

    owner: dict[str, set[str]] = defaultdict(set)  # normalised text -> classes it belongs to
    for label, texts in own_texts.items():
        for t in texts:
            owner[t].add(label)
    namer = _ClassNames(sorted(set(label_of.values())), names)
    drops: Counter = Counter()
    kept: dict[str, list[dict]] = {}
    for image_id, entries in retrieved.items():
        label = label_of.get(image_id)
        out = []
        for e in entries:
            score = e.get("score")
            key = normalise(e["text"])
            if score is not None and score < threshold:
                drops["below the noise threshold"] += 1
            elif label is not None and owner.get(key) and label not in owner[key]:
                drops["another class's name or own caption"] += 1
            elif label is not None and (named := namer.named(e["text"])) and label not in named:
                drops["names another class"] += 1
            else:
                out.append(e)
        kept[image_id] = out
    return _drop_generic(kept, label_of, drops), drops


def _drop_generic(
    kept: dict[str, list[dict]], label_of: Mapping[str, str], drops: Counter
) -> dict[str, list[dict]]:
    """Filter 4: captions spread over many classes or many images of several classes."""
    images: Counter = Counter()
    classes: dict[str, set[str]] = defaultdict(set)
    for image_id, entries in kept.items():
        for text in dict.fromkeys(e["text"] for e in entries):
            images[text] += 1
            classes[text].add(label_of.get(image_id, image_id))
    n = max(len(kept), len(label_of), 1)  # the share of the collection's images
    generic = {
        t
        for t in images
        if len(classes[t]) > MAX_CAPTION_CLASSES
        or (images[t] / n > MAX_CAPTION_SHARE and len(classes[t]) > 1)
    }
    out = {}
    for image_id, entries in kept.items():
        out[image_id] = [e for e in entries if e["text"] not in generic]
        drops["generic (many classes)"] += len(entries) - len(out[image_id])
    return out


def _own_texts(train, names: Mapping[str, str]) -> dict[str, set[str]]:
    texts: dict[str, set[str]] = defaultdict(set)
    for label, name in names.items():
        texts[label] |= {normalise(name), normalise(label)}
    for r in train:
        texts[r.label] |= {normalise(c) for c in r.captions}
    return texts


def _write(path: Path, entries: Mapping[str, list[dict]]) -> Path:
    from mcip.data.captions import write_caption_sidecar

    path.unlink(missing_ok=True)
    write_caption_sidecar(path, {k: v for k, v in entries.items() if v})
    return path


def build_caption_sets(
    folder: Path,
    train: Sequence,
    names: Mapping[str, str],
    templates_per_image: int,
    pool: str | None,
    load_base: Callable[[], object],
    top_k: int,
    min_sim: float,
    cache: Path,
    progress: bool,
    log: LOG,
) -> CaptionSets:
    """Write the caption sets of the module docstring into ``folder`` (skipped when done earlier)."""
    from mcip.captions.diversity import caption_diversity, format_diversity
    from mcip.captions.merge import merge_sidecars
    from mcip.captions.templates import template_captions

    marker = folder / "summary.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        log(f"  captions: done earlier ({folder})")
        return CaptionSets({k: Path(v) for k, v in done["files"].items()}, done["default"], done)
    folder.mkdir(parents=True, exist_ok=True)
    own = {r.id: [{"text": t, "source": "manifest", "score": None} for t in r.captions] for r in train}
    sources = [_write(folder / "own.jsonl", own)] if any(own.values()) else []
    templates = folder / "templates.jsonl"
    templates.unlink(missing_ok=True)
    summary: dict = {"own": sum(len(v) for v in own.values())}
    summary["templates"] = template_captions(train, templates, dict(names), per_image=templates_per_image)
    files = {POLICY_OWN: folder / "own+templates.jsonl"}
    merge_sidecars([*sources, templates], files[POLICY_OWN], max_per_image=MAX_CAPTIONS_PER_IMAGE)
    default = POLICY_OWN
    if pool:
        kept = _retrieve(folder, train, names, pool, load_base, top_k, min_sim, cache, progress, summary, log)
        diversity = caption_diversity(kept, train, names)
        summary["retrieved_diversity"] = diversity.as_dict()
        log(f"  retrieved captions after the filters: {format_diversity(diversity)}")
        if not any(kept.values()):
            log("  no retrieved caption passed the filters: MCIP trains on own captions + templates only")
        elif diversity.degenerate:
            log(
                "  the retrieved captions are still degenerate after the filters ("
                + "; ".join(diversity.problems)
                + "): mcip fit leaves them out and trains MCIP on own captions + templates. A --pool "
                "that describes your images (product descriptions, not generic alt-texts) can change that."
            )
        else:
            retrieved = _write(folder / "retrieved-filtered.jsonl", kept)
            files[POLICY_RETRIEVED] = folder / "own+templates+retrieved.jsonl"
            # own first, then retrieved, then templates fill up to the cap
            merge_sidecars(
                [*sources, retrieved, templates],
                files[POLICY_RETRIEVED],
                max_per_image=MAX_CAPTIONS_PER_IMAGE,
            )
            default = POLICY_RETRIEVED
    for policy, path in files.items():
        from mcip.data.captions import read_caption_entries

        d = caption_diversity(read_caption_entries(path), train, names)
        summary.setdefault("diversity", {})[policy] = d.as_dict()
        log(f"  captions ({policy}): {format_diversity(d)}")
    summary |= {"files": {k: str(v) for k, v in files.items()}, "default": default}
    marker.write_text(json.dumps(summary, indent=2, default=str))
    return CaptionSets(files, default, summary)


def _retrieve(folder, train, names, pool, load_base, top_k, min_sim, cache, progress, summary, log):
    """Retrieve from the pool, then filter (the module docstring); returns the kept entries by id."""
    from mcip.captions.retrieve import load_pool, retrieve_captions
    from mcip.data.captions import read_caption_entries
    from mcip.embed import cached_image_embeddings, cached_text_embeddings

    model = load_base()
    raw = folder / "retrieved.jsonl"
    raw.unlink(missing_ok=True)
    result = retrieve_captions(
        model, train, pool, raw, top_k=top_k, min_sim=min_sim, cache_dir=cache, progress=progress
    )
    retrieved = read_caption_entries(raw) if raw.is_file() else {}
    texts, _ = load_pool(pool, None)
    pool_emb = np.asarray(cached_text_embeddings(model, texts, cache), np.float32)
    step = max(1, len(train) // NOISE_SAMPLE_IMAGES)  # an even sample of the images (cached: no re-encode)
    image_emb = np.asarray(cached_image_embeddings(model, [r.path for r in train[::step]], cache), np.float32)
    image_emb = image_emb[~np.isnan(image_emb[:, 0])]
    threshold = max(min_sim, noise_threshold(image_emb, pool_emb)) if len(image_emb) else min_sim
    del model
    label_of = {r.id: r.label for r in train}
    kept, drops = filter_retrieved(retrieved, label_of, _own_texts(train, names), names, threshold)
    total = sum(len(v) for v in retrieved.values())
    summary |= {
        "retrieved": total,
        "retrieved_kept": sum(len(v) for v in kept.values()),
        "noise_threshold": round(threshold, 4),
        "dropped": dict(drops),
        "unreadable": len(result.unreadable),
    }
    shown = ", ".join(f"{n} {why}" for why, n in drops.items() if n) or "none"
    log(
        f"  retrieved {total} captions from {pool} (top {top_k}); kept {summary['retrieved_kept']} "
        f"(noise threshold {threshold:.3f}); dropped: {shown}"
    )
    return kept
