"""Are a sidecar's pseudo-captions worth training on? Caption retrieval with a model that does not know the
domain returns the same few captions for everything (on a real photo catalogue with a base CLIP model,
one product name was among the captions of a third of all images, and five captions covered most of
them); MCIP then pulls unrelated images towards one text. :func:`caption_diversity` measures it:

- ``top1_coverage``: the share of captioned images whose captions include the most frequent caption
  (frequency = number of images whose captions include it); ``top5_coverage``: the share whose captions
  include at least one of the five most frequent.
- ``distinct_per_class`` (labels known): the number of distinct caption texts among a class's images,
  averaged over the classes.
- ``other_class_share`` (labels known): the share of labelled captioned images whose top caption (the
  first: retrieval writes best first) names another class and not its own. "Names" is a case-insensitive
  match of the class's label or name as whole words (letters and digits; ``red_fox`` matches "a red fox
  at night", ``cat`` does not match "catalog"); labels and names shorter than 3 characters are not matched.

The sidecar is degenerate (``problems`` not empty, ``warning()`` says why and what to do) when any of:

- ``top1_coverage`` > :data:`MAX_TOP1_COVERAGE` (20%) and, when labels are known, that caption spans
  more than one class (a caption confined to its class may cover all of it);
- ``top5_coverage`` > :data:`MAX_TOP5_COVERAGE` (50%) and, when labels are known, those five captions
  span more than five classes;
- ``distinct_per_class`` < :data:`MIN_DISTINCT_PER_CLASS` (1.5): most classes see a single caption;
- ``other_class_share`` > :data:`MAX_OTHER_CLASS_SHARE` (20%).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from mcip.data.records import ImageRecord

MAX_TOP1_COVERAGE = 0.20
MAX_TOP5_COVERAGE = 0.50
MIN_DISTINCT_PER_CLASS = 1.5
MAX_OTHER_CLASS_SHARE = 0.20
TOP = 5
MIN_NAME_CHARS = 3
MAX_NAME_WORDS = 8
EXAMPLES = 3

ADVICE = (
    "Add class-name captions: `mcip captions template --images {images} [--names NAMES] --out templates.jsonl`, "
    "then `mcip captions merge templates.jsonl {sidecar} --out merged.jsonl` (templates first, so every image "
    "keeps captions of its own class) and train on merged.jsonl; or retrieve with a model that knows the "
    "domain, or from a pool that describes it."
)


@dataclass(frozen=True)
class CaptionDiversity:
    """How varied a sidecar's captions are (definitions and thresholds: the module docstring)."""

    images: int  # images with at least one caption
    distinct_captions: int
    most_frequent: tuple[tuple[str, int], ...]  # up to 5 (caption, images whose captions include it)
    top1_coverage: float
    top5_coverage: float
    classes: int = 0  # classes among the labelled captioned images; 0: labels unknown
    distinct_per_class: float | None = None
    other_class_share: float | None = None
    other_class_examples: tuple[tuple[str, str], ...] = ()  # (image id, its top caption)
    problems: tuple[str, ...] = ()

    @property
    def degenerate(self) -> bool:
        return bool(self.problems)

    def warning(self, sidecar: str = "SIDECAR", images: str = "IMAGES") -> str:
        """``""`` when healthy, else the problems with their numbers and the advice (whose commands name
        ``sidecar`` and ``images``)."""
        if not self.problems:
            return ""
        advice = ADVICE.format(sidecar=sidecar, images=images)
        return "The captions look degenerate: " + "; ".join(self.problems) + ". " + advice

    def as_dict(self) -> dict:
        out = asdict(self)
        out["most_frequent"] = [list(pair) for pair in self.most_frequent]
        out["other_class_examples"] = [list(pair) for pair in self.other_class_examples]
        out["problems"], out["degenerate"] = list(self.problems), self.degenerate
        return out


def caption_texts(entries: Sequence[Mapping | str]) -> list[str]:
    """The stripped, non-empty texts of one image's caption entries (dicts with ``text``, or strings)."""
    texts = (e.get("text") if isinstance(e, Mapping) else e for e in entries)
    return [t.strip() for t in texts if isinstance(t, str) and t.strip()]


def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[^\W_]+", text.lower()))


class _ClassNames:
    """Which classes a caption names: whole-word phrases of every label and name, looked up by n-gram."""

    def __init__(self, labels: Sequence[str], names: Mapping[str, str] | None) -> None:
        self.phrases: dict[tuple[str, ...], set[str]] = {}
        for label in labels:
            for text in {label, (names or {}).get(label, label)}:
                words = _words(text)
                if words and len(" ".join(words)) >= MIN_NAME_CHARS:
                    self.phrases.setdefault(words[:MAX_NAME_WORDS], set()).add(label)
        self.longest = max((len(p) for p in self.phrases), default=0)
        self.cache: dict[str, set[str]] = {}

    def named(self, caption: str) -> set[str]:
        if caption not in self.cache:
            words, found = _words(caption), set()
            for n in range(1, self.longest + 1):
                for start in range(len(words) - n + 1):
                    found |= self.phrases.get(words[start : start + n], set())
            self.cache[caption] = found
        return self.cache[caption]


def _class_stats(captioned: Mapping[str, list[str]], label_of: Mapping[str, str], names) -> dict:
    """``classes``, ``distinct_per_class``, ``other_class_share`` and examples over the labelled images."""
    by_class: dict[str, set[str]] = {}
    for image_id, texts in captioned.items():
        by_class.setdefault(label_of[image_id], set()).update(texts)
    finder = _ClassNames(sorted(by_class), names)
    wrong = []
    for image_id, texts in captioned.items():
        named, own = finder.named(texts[0]), label_of[image_id]
        if named - {own} and own not in named:
            wrong.append((image_id, texts[0]))
    return {
        "classes": len(by_class),
        "distinct_per_class": sum(len(t) for t in by_class.values()) / len(by_class),
        "other_class_share": len(wrong) / len(captioned),
        "other_class_examples": tuple(wrong[:EXAMPLES]),
    }


def _span(captions: set[str], captioned: Mapping[str, list[str]], label_of: Mapping[str, str]) -> int:
    """Number of classes among the labelled images whose captions include one of ``captions``."""
    return len({label_of[i] for i, t in captioned.items() if i in label_of and captions & set(t)})


def _problems(d: dict, captioned: Mapping[str, list[str]], label_of: Mapping[str, str]) -> list[str]:
    out = []
    most = d["most_frequent"]
    if d["top1_coverage"] > MAX_TOP1_COVERAGE:
        span = _span({most[0][0]}, captioned, label_of) if label_of else None
        if span is None or span > 1:
            classes = f", {span} classes" if span is not None else ""
            out.append(
                f"one caption, {most[0][0]!r}, is among the captions of {d['top1_coverage']:.0%} of the images "
                f"({most[0][1]} of {d['images']}{classes}; threshold {MAX_TOP1_COVERAGE:.0%})"
            )
    if d["top5_coverage"] > MAX_TOP5_COVERAGE:
        span = _span({t for t, _ in most}, captioned, label_of) if label_of else None
        if span is None or span > TOP:
            out.append(
                f"the {len(most)} most frequent captions cover {d['top5_coverage']:.0%} of the images "
                f"(threshold {MAX_TOP5_COVERAGE:.0%})"
            )
    if d.get("distinct_per_class") is not None and d["distinct_per_class"] < MIN_DISTINCT_PER_CLASS:
        out.append(
            f"{d['distinct_per_class']:.2f} distinct captions per class on average "
            f"(threshold {MIN_DISTINCT_PER_CLASS})"
        )
    if d.get("other_class_share") is not None and d["other_class_share"] > MAX_OTHER_CLASS_SHARE:
        example = "; ".join(f"{i}: {t!r}" for i, t in d["other_class_examples"][:1])
        out.append(
            f"the top caption of {d['other_class_share']:.0%} of the labelled images names another class "
            f"(threshold {MAX_OTHER_CLASS_SHARE:.0%}; e.g. {example})"
        )
    return out


def caption_diversity(
    entries: Mapping[str, Sequence[Mapping | str]],
    records: Sequence[ImageRecord] | None = None,
    names: Mapping[str, str] | None = None,
) -> CaptionDiversity:
    """The diversity of a sidecar's captions (``entries``: image id -> caption entries, as
    :func:`mcip.data.captions.read_caption_entries` returns them).

    ``records`` give the labels (by id; images of the sidecar without a record only count in the coverage);
    ``names``: label -> class name (as ``mcip captions template --names``), also matched as a class's name.
    """
    captioned = {str(i): t for i, e in entries.items() if (t := caption_texts(e))}
    n = len(captioned)
    coverage = Counter(c for texts in captioned.values() for c in dict.fromkeys(texts))
    most = tuple(coverage.most_common(TOP))
    top = {t for t, _ in most}
    d: dict = {
        "images": n,
        "distinct_captions": len(coverage),
        "most_frequent": most,
        "top1_coverage": most[0][1] / n if n else 0.0,
        "top5_coverage": sum(bool(top & set(t)) for t in captioned.values()) / n if n else 0.0,
    }
    label_of = {r.id: r.label for r in records or ()}
    labelled = {i: t for i, t in captioned.items() if i in label_of}
    if labelled:
        d |= _class_stats(labelled, label_of, names)
    problems = _problems(d, captioned, label_of if labelled else {})
    return CaptionDiversity(**d, problems=tuple(problems))


def format_diversity(d: CaptionDiversity) -> str:
    """One line of the numbers (the warning is separate: :meth:`CaptionDiversity.warning`)."""
    line = (
        f"diversity: {d.distinct_captions} distinct captions on {d.images} images; the most frequent caption "
        f"is on {d.top1_coverage:.0%} of the images, the top {len(d.most_frequent)} on {d.top5_coverage:.0%}"
    )
    if d.classes:
        line += (
            f"; {d.distinct_per_class:.1f} distinct captions per class ({d.classes} classes); top caption "
            f"names another class on {d.other_class_share:.0%} of the images"
        )
    return line
