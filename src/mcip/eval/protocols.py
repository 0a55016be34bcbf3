"""The evaluation protocols of SPEC section 6: embeddings + a benchmark's data -> flat ``{metric: percent}``.

Every function takes L2-normalised (B, D) embeddings (torch tensors; integer labels as tensors or numpy
arrays) and returns a flat dict of metric name -> value in PERCENT. The metric definitions (self-match,
which recall, tie handling) are in :mod:`mcip.eval.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import Tensor

from mcip.errors import InputError
from mcip.eval.benchmarks.base import RetrievalSet
from mcip.eval.metrics import (
    image_to_text_recall,
    knn_classify,
    recall_at_k,
    retrieval_average_precision,
    text_to_image_recall,
    topk_accuracy,
    zeroshot_scores,
)
from mcip.eval.revisited import revisited_average_precision
from mcip.eval.text_encoding import encode_texts_by_length
from mcip.models.base import EmbeddingModel

REVISITED_SETTINGS = ("easy", "medium", "hard")
REVISITED_KS = (1, 5, 10)


def _percent(x: float | Tensor) -> float:
    return 100.0 * float(x)


def _labels(labels) -> Tensor:
    return torch.as_tensor(labels)


def map_scores(
    emb: Tensor, labels, include_self: bool = True, subsets: Sequence[tuple[str, int, int]] = ()
) -> dict[str, float]:
    """All-vs-all mAP: ``{"map": ..., "map/<name>": ...}``; a subset's score is the mean AP over its query
    rows ``start:stop`` (GPR1200's six 2,000-image slices). Queries with AP = NaN (no relevant item when
    the query itself is excluded) are left out of the means."""
    ap = retrieval_average_precision(emb, _labels(labels), include_self=include_self)
    out = {"map": _percent(ap.nanmean())}
    for name, start, stop in subsets:
        if not 0 <= start < stop <= len(ap):
            raise InputError(f"Subset {name!r} rows {start}:{stop} lie outside the {len(ap)} queries.")
        out[f"map/{name}"] = _percent(ap[start:stop].nanmean())
    return out


def recall_scores(
    emb: Tensor, labels, ks: Sequence[int] = (1, 2, 4, 8), include_self: bool = False
) -> dict[str, float]:
    """All-vs-all Recall@k (CUB protocol by default): ``{"recall@1": ..., "recall@2": ...}``."""
    recall = recall_at_k(emb, _labels(labels), ks, include_self=include_self)
    return {f"recall@{k}": _percent(v) for k, v in recall.items()}


def evaluate_retrieval(emb: Tensor, labels, s: RetrievalSet) -> dict[str, float]:
    """Image-to-image retrieval over ``s``: mAP (+ subset mAPs) when ``s.metric == "map"`` (GPR1200,
    INSTRE), Recall@k for ``s.ks`` when ``"recall"`` (CUB); the query itself per ``s.include_self``."""
    if s.metric == "map":
        return map_scores(emb, labels, s.include_self, s.subsets)
    return recall_scores(emb, labels, s.ks, s.include_self)


def evaluate_revisited(query_emb: Tensor, db_emb: Tensor, gnd: Sequence[Mapping]) -> dict[str, float]:
    """Revisited Oxford / Paris: ``{easy,medium,hard}_map`` and ``{easy,medium,hard}_mp@{1,5,10}``.

    Means over the queries that have positives in that setting (revisitop); ``gnd[i]`` has ``easy``,
    ``hard`` and ``junk`` database indices for query i. Table 1 reports ``medium_map``.
    """
    out = {}
    for setting in REVISITED_SETTINGS:
        ap, precision = revisited_average_precision(query_emb, db_emb, gnd, setting, REVISITED_KS)
        out[f"{setting}_map"] = _percent(ap.nanmean())
        for j, k in enumerate(REVISITED_KS):
            out[f"{setting}_mp@{k}"] = _percent(precision[:, j].nanmean())
    return out


def evaluate_knn(
    index_emb: Tensor,
    index_labels,
    query_emb: Tensor,
    query_labels,
    num_classes: int,
    k: int = 21,
    temperature: float = 0.1,
) -> dict[str, float]:
    """Weighted k-NN classification (k = 21, weights exp(sim / 0.1)): ``{"top1", "top5"}`` accuracy."""
    scores = knn_classify(index_emb, _labels(index_labels), query_emb, num_classes, k, temperature)
    accuracy = topk_accuracy(scores, _labels(query_labels), (1, 5))
    return {f"top{k}": _percent(v) for k, v in accuracy.items()}


class TextEncoder(Protocol):
    def encode_text(self, texts: list[str]) -> Tensor: ...


@torch.no_grad()
def zeroshot_classifier(
    model: TextEncoder, classnames: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> Tensor:
    """(C, D) zero-shot class embeddings, CLIP's recipe: for each class, every template with ``{}``
    replaced by the class name is encoded and L2-normalised; the T prompt embeddings are averaged and the
    mean is L2-normalised again. Prompts are encoded ``batch_size`` at a time; an :class:`EmbeddingModel`
    encodes each distinct prompt once, in token-length order
    (:func:`mcip.eval.text_encoding.encode_texts_by_length`: the same embeddings up to float rounding)."""
    prompts = zeroshot_prompts(classnames, templates)
    if isinstance(model, EmbeddingModel):
        return classifier_from_prompts(encode_texts_by_length(model, prompts, batch_size), len(classnames))
    parts = [
        model.encode_text(prompts[i : i + batch_size]).float().cpu()
        for i in range(0, len(prompts), batch_size)
    ]
    return classifier_from_prompts(torch.cat(parts), len(classnames))


def zeroshot_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every class name, class-major: ``C * T`` prompts."""
    if not classnames or not templates or any("{}" not in t for t in templates):
        raise InputError("Need at least one class name and templates that each contain '{}' for the name.")
    return [t.replace("{}", name) for name in classnames for t in templates]


def classifier_from_prompts(prompt_emb: Tensor, num_classes: int) -> Tensor:
    """(C * T, D) prompt embeddings in class-major order -> (C, D): normalise, average per class, normalise."""
    per_prompt = torch.nn.functional.normalize(prompt_emb.float(), dim=-1)
    per_class = per_prompt.view(num_classes, -1, per_prompt.shape[-1]).mean(1)
    return torch.nn.functional.normalize(per_class, dim=-1)


def evaluate_zeroshot(
    image_emb: Tensor, labels, classifier: Tensor, label_sets: Sequence[Sequence[int]] | None = None
) -> dict[str, float]:
    """Zero-shot classification by cosine similarity to ``classifier`` (C, D): ``{"top1", "top5"}``.

    With ``label_sets`` (ObjectNet over ImageNet classes) image i accepts any class in ``label_sets[i]``:
    a top-k hit when one of the k best-scoring classes is in the set.
    """
    scores = zeroshot_scores(image_emb, classifier)
    if label_sets is None:
        accuracy = topk_accuracy(scores, _labels(labels), (1, 5))
        return {f"top{k}": _percent(v) for k, v in accuracy.items()}
    top = torch.topk(scores, min(5, scores.shape[1]), dim=1).indices.tolist()
    out = {}
    for k in (1, 5):
        hits = [bool(set(row[:k]) & set(accept)) for row, accept in zip(top, label_sets, strict=True)]
        out[f"top{k}"] = 100.0 * sum(hits) / max(len(hits), 1)
    return out


def evaluate_t2i(
    image_emb: Tensor,
    text_emb: Tensor,
    caption_image,
    ks: Sequence[int] = (1, 5, 10),
    image_labels=None,
) -> dict[str, float]:
    """Text-image retrieval: ``recall@k`` (text -> image: a caption hits if its image is in the top k) and
    ``i2t_recall@k`` (image -> text: an image hits if any of its captions is in the top k). With
    ``image_labels`` every image of a caption's label counts as its image (see the metric functions)."""
    caption_image = _labels(caption_image)
    labels = None if image_labels is None else _labels(image_labels)
    t2i = text_to_image_recall(text_emb, image_emb, caption_image, ks, image_labels=labels)
    i2t = image_to_text_recall(image_emb, text_emb, caption_image, ks, image_labels=labels)
    return {f"recall@{k}": _percent(v) for k, v in t2i.items()} | {
        f"i2t_recall@{k}": _percent(v) for k, v in i2t.items()
    }
