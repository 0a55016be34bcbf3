"""``check_index``: is the index still aligned with text? Text-to-image recall on captioned indexed images.

Definition (the same as ``mcip.eval.metrics.text_to_image_recall``): a sample of indexed images that
have captions is drawn (seeded); every caption of a sampled image is a query that ranks all N indexed
images by exact inner product with the stored embeddings (ties by row, ascending); recall@k is the
fraction of queries whose own image ranks <= k (scores within 1e-6 tie). The search is exact on purpose: the check tests the
model's text-image alignment, not the approximate index.

Verdict: with N images, a random ranking gives recall@10 = min(1, 10 / N) ("chance"). Alignment looks
broken when recall@10 < max(``min_recall``, 3 x chance), ``min_recall`` = 0.2 by default: an aligned
CLIP finds a caption's image in its top 10 far more often than 1 in 5 on collections up to millions of
images, while a model fine-tuned for image retrieval without re-alignment (GPR-FT without Re-A) drops to
near chance. With fewer than 30 images 3 x chance exceeds 1 and the verdict is "undetermined".
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mcip.data.manifest import PATH_COLUMNS, read_manifest_rows
from mcip.data.records import parse_captions
from mcip.errors import ConfigError, InputError
from mcip.index.search import SearchIndex
from mcip.models.base import EmbeddingModel

MIN_RECALL_AT_10 = 0.2
CHANCE_FACTOR = 3.0


def _captions(value: object, where: str) -> tuple[str, ...]:
    """Captions as strings: a list of strings or of ``{"text": ...}`` entries, a JSON list, or ``a|b``."""
    if isinstance(value, list | tuple):
        value = [v.get("text") if isinstance(v, dict) else v for v in value]
    return parse_captions(value, where)


def read_caption_queries(
    source: str | os.PathLike, root: str | os.PathLike | None = None, encoding: str | None = None
) -> list[tuple[str | None, Path | None, tuple[str, ...]]]:
    """``(id, absolute path, captions)`` per row of a manifest or caption sidecar (id or path may be None);
    ``encoding`` of the file (default: detected, see ``mcip.data.textfile``)."""
    path = Path(source)
    if path.is_dir():
        raise InputError(f"{source} is a folder; --captions needs a manifest or a caption sidecar (.jsonl).")
    base = Path(root) if root is not None else path.parent
    out = []
    for i, row in enumerate(read_manifest_rows(path, encoding)):
        where = f"{path}, row {i + 1}"
        raw = next((row[c] for c in PATH_COLUMNS if row.get(c) not in (None, "")), None)
        file = (
            None
            if raw is None
            else (Path(str(raw)) if Path(str(raw)).is_absolute() else base / str(raw)).resolve()
        )
        rec_id = None if row.get("id") in (None, "") else str(row["id"]).strip()
        if rec_id is None and file is None:
            raise InputError(f"{where}: neither 'id' nor 'path'; each row must name its image.")
        out.append((rec_id, file, _captions(row.get("captions"), where)))
    return out


def _match(index: SearchIndex, rows) -> tuple[dict[int, list[str]], list[str]]:
    """Captions by index row (matched by id, else by path), and the rows that match no indexed image."""
    by_row: dict[int, list[str]] = {}
    unmatched, by_path = [], None
    for rec_id, file, captions in rows:
        row = index.row_of(rec_id) if rec_id is not None else None
        if row is None and file is not None:
            if by_path is None:
                by_path = {str(r.path): i for i, r in enumerate(index.iter_records())}
            row = by_path.get(str(file))
        if row is None:
            unmatched.append(rec_id or str(file))
        elif captions:
            by_row.setdefault(row, []).extend(captions)
    return by_row, unmatched


TIE = 1e-6


def ranks_of_targets(
    queries: np.ndarray, embeddings: np.ndarray, targets: np.ndarray, chunk: int = 65_536
) -> np.ndarray:
    """(T,) 1-based rank of each query's target row among all N rows, streaming over (N, D) ``embeddings``
    in chunks; queries (T, D) float32. Scores within ``TIE`` of the target's count as ties (two float32
    computations of one dot product may differ in the last bits), broken by row, ascending."""
    t_scores = np.einsum("td,td->t", queries, np.asarray(embeddings[targets], dtype=np.float32))[:, None]
    above = np.zeros(len(queries), dtype=np.int64)
    for lo in range(0, embeddings.shape[0], chunk):
        block = np.asarray(embeddings[lo : lo + chunk], dtype=np.float32)
        sim = queries @ block.T  # (T, n)
        cols = np.arange(lo, lo + len(block))[None, :]
        tied = np.abs(sim - t_scores) <= TIE
        beats = ((sim > t_scores) & ~tied) | (tied & (cols < targets[:, None]))
        beats[cols == targets[:, None]] = False
        above += beats.sum(1)
    return above + 1


@torch.no_grad()
def _encode_texts(model: EmbeddingModel, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    parts = [
        model.encode_text(list(texts[i : i + batch_size])).float().cpu().numpy()
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


def _verdict(recall10: float, n: int, min_recall: float) -> tuple[str, float, str | None]:
    chance = min(1.0, 10 / n)
    threshold = max(min_recall, CHANCE_FACTOR * chance)
    if threshold >= 1.0:
        return "undetermined", threshold, f"only {n} indexed images: too few to judge alignment (need >= 30)."
    if recall10 < threshold:
        return (
            "broken",
            threshold,
            (
                f"text-to-image recall@10 is {100 * recall10:.1f}%, below {100 * threshold:.1f}% (chance: "
                f"{100 * chance:.2f}%): text queries barely find their images. The image tower was probably "
                "fine-tuned without re-aligning the text tower (GPR-FT without Re-A); run the realign stage "
                "(mcip train ... stage=realign) and query with the re-aligned model."
            ),
        )
    return "ok", threshold, None


def check_index(
    index_dir: str | os.PathLike,
    captions_source: str | os.PathLike,
    sample: int = 1000,
    k: Sequence[int] = (1, 5, 10),
    *,
    root: str | os.PathLike | None = None,
    model: EmbeddingModel | str | os.PathLike | None = None,
    device: str = "cpu",
    seed: int = 0,
    min_recall: float = MIN_RECALL_AT_10,
    encoding: str | None = None,
) -> dict:
    """Text-to-image recall@k of the index on ``sample`` captioned images (definition and verdict: module
    docstring). ``captions_source``: a manifest (``path`` or ``id`` + ``captions``) or a caption sidecar, in
    ``encoding`` (default: detected)."""
    start = time.perf_counter()
    ks = sorted({int(x) for x in k})
    if sample < 1 or not ks or ks[0] < 1:
        raise ConfigError(f"Need sample >= 1 and every k >= 1; got sample={sample}, k={list(k)}.")
    with SearchIndex.open(index_dir, model=model, device=device) as index:
        by_row, unmatched = _match(index, read_caption_queries(captions_source, root, encoding))
        if not by_row:
            raise InputError(
                f"No caption in {captions_source} belongs to an image of {index_dir} ({len(unmatched)} rows "
                f"name other images, e.g. {unmatched[:1]}); match the index's ids or image paths."
            )
        rows = np.sort(np.random.default_rng(seed).permutation(sorted(by_row))[: min(sample, len(by_row))])
        texts = [c for r in rows.tolist() for c in by_row[r]]
        targets = np.asarray([r for r in rows.tolist() for _ in by_row[r]], dtype=np.int64)
        ranks = ranks_of_targets(_encode_texts(index.model, texts), index.embeddings, targets)
        n = len(index)
        recall = {f"recall@{x}": float(np.mean(ranks <= x)) for x in ks}
        verdict, threshold, warning = _verdict(float(np.mean(ranks <= 10)), n, min_recall)
        return {
            "index": str(index_dir),
            "model": index.info["model"],
            "index_size": n,
            "images_with_captions": len(by_row),
            "images_sampled": len(rows),
            "queries": len(texts),
            "unmatched_rows": len(unmatched),
            "unmatched_examples": unmatched[:5],
            **recall,
            "chance@10": min(1.0, 10 / n),
            "threshold@10": threshold,
            "verdict": verdict,
            "warning": warning,
            "seconds": round(time.perf_counter() - start, 3),
        }
