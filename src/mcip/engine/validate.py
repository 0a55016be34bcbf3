"""Validation on data held out from training (never on an evaluation benchmark), both sides at once.

Every stage validates the image side AND the text side whenever its validation data allows it, so a
run's ``metrics.jsonl`` shows the trade-off at every validation:

- ``i2i_map``: unseen classes (the default: val classes never train): every val image queries all val
  images, itself included (GPR1200 protocol); relevant = same label; mAP in %. Seen classes (held-out
  photos of trained classes, ``data.val_mode=seen_classes``): every val image queries the training
  images (the gallery, at most ``MAX_GALLERY`` of them, a fixed sample), relevant = same label; mAP and
  ``i2i_r1`` (the top gallery image has the query's label) in %.
- ``t2i_r1/r5/r10``: every val caption (at most ``MAX_VAL_CAPTIONS``: each image's first caption, then
  each image's second, ...) retrieves among the captioned val images; a hit when the caption's own image
  is in the top k (Recall@k in %).
- ``combined`` (when the validator has a reference, i.e. the starting model's results):
  ``mean(i2i_map / ref_i2i_map, t2i_r5 / ref_t2i_r5)`` over the sides measured, each ratio relative to
  the starting model so that neither side dominates by scale. A reference below 1 point counts as 1
  (a side the starting model cannot do at all is measured in points gained). 1.0 = as good as the start.

``select`` (``loop.select``) names what picks the best checkpoint: ``i2i`` -> ``i2i_map``,
``t2i`` -> ``t2i_r5``, ``combined`` -> ``combined``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mcip.data.records import ImageRecord, class_index
from mcip.embed import encode_images, project_image_features
from mcip.errors import ConfigError
from mcip.eval.metrics import (
    query_gallery_average_precision,
    retrieval_average_precision,
    text_to_image_recall,
)
from mcip.models.base import EmbeddingModel

MAX_VAL_CAPTIONS = 3_000  # T2I queries per validation: enough for R@5 to +-1 point, cheap to re-encode
MAX_GALLERY = 20_000
SELECT_KEYS = {"i2i": "i2i_map", "t2i": "t2i_r5", "combined": "combined"}
COMBINED_SIDES = ("i2i_map", "t2i_r5")
REFERENCE_FLOOR = 1.0  # points


def _round_robin(captions: Sequence[Sequence[str]], limit: int) -> list[tuple[int, str]]:
    """(owner, caption) pairs: every image's first caption, then every image's second, ... up to
    ``limit``, so a cap keeps every captioned image queried before any gets a second query."""
    out: list[tuple[int, str]] = []
    depth = 0
    while len(out) < limit and any(len(c) > depth for c in captions):
        out += [(k, c[depth]) for k, c in enumerate(captions) if len(c) > depth][: limit - len(out)]
        depth += 1
    return sorted(out)


def combined_score(results: dict[str, float], reference: dict[str, float]) -> float:
    """Mean over the sides in both dicts of ``results[k] / max(reference[k], 1)`` (see module doc)."""
    ratios = [
        results[k] / max(reference[k], REFERENCE_FLOOR)
        for k in COMBINED_SIDES
        if k in results and k in reference
    ]
    return float(np.mean(ratios)) if ratios else float("nan")


def encode_records(model: EmbeddingModel, records: Sequence[ImageRecord], batch_size: int = 64):
    """(M, D) embeddings of the readable records and the (M,) indices of those records."""
    encoded = encode_images(model, [r.path for r in records], batch_size=batch_size, progress=False)
    return torch.from_numpy(encoded.embeddings), torch.tensor(encoded.rows, dtype=torch.long)


def _eval_mode(model: EmbeddingModel):
    was = model.training
    model.eval()
    return lambda: model.train(was)


@torch.no_grad()
def encode_shards(
    model: EmbeddingModel, shards: Sequence[str], classes: dict[str, int], batch_size: int = 64
):
    """(M, D) embeddings and (M,) class indices of the shard samples whose label is in ``classes``."""
    from mcip.data import ShardDataset, collate_images

    dataset = ShardDataset(shards, model.eval_transform, classes, shuffle_buffer=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images)
    chunks, labels = [], []
    for batch in loader:
        if batch["pixels"] is not None:
            chunks.append(model.encode_image(batch["pixels"].to(model.device)).float().cpu())
            labels.append(batch["labels"])
    if not chunks:
        return torch.zeros(0, model.embed_dim), torch.zeros(0, dtype=torch.long)
    return torch.cat(chunks), torch.cat(labels)


def cached_rows(cached: np.ndarray | None, rows: Sequence[int]):
    """The readable ones among ``rows`` of a cache with NaN rows for unreadable images:
    ((M, D) embeddings, (M,) positions into ``rows``)."""
    images = torch.from_numpy(np.asarray(cached[np.asarray(rows, dtype=np.int64)], dtype=np.float32))
    keep = ~torch.isnan(images[:, 0])
    return images[keep], torch.arange(len(rows))[keep]


class Validator:
    """``validator(task) -> {"i2i_map", "t2i_r1", "t2i_r5", "t2i_r10", "combined"}`` (the keys that
    apply) for ``model`` on the ``val`` records.

    ``image_cache`` (N_val, D): precomputed image embeddings of ``val`` (NaN rows: unreadable), used when
    the image side does not train (Re-A) instead of encoding the images again. Set by a stage whose towers
    are frozen, so that a validation runs only what trains: ``image_features`` (N_val, F_img), the frozen
    image encoder's pooled features of ``val`` (the projector runs on them; the alignment);
    ``text_features`` (T, F_txt), the frozen text encoder's pooled features of the captions in ``texts``
    (the alignment); ``text_embeddings`` (T, D), their embeddings when no part of the text side trains
    (GPR-FT, MCIP); ``image_stems``, the val images' activations after the image encoder's frozen first
    groups (:mod:`mcip.image_stems`; GPR-FT and MCIP with ``freeze_image_groups``), so the rest of the
    encoder runs on them while the stem is unchanged (checked at every validation). ``text_hidden``: set by Re-A
    (:func:`mcip.stages.text_cache.cache_val_text_hidden`), the frozen lower text blocks' states of
    the val captions (``texts``), so each validation runs only the unlocked ones, as the training steps do. ``shards``: read the val
    images from tar shards. ``text=False`` skips the text side (no captions, no text tower, or an
    embedding without a matching text projector). Set ``reference`` (e.g. from :meth:`calibrate` on the
    starting model) to get ``combined``.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        val: Sequence[ImageRecord],
        shards: Sequence[str] | None = None,
        image_cache: np.ndarray | None = None,
        text: bool = True,
    ) -> None:
        self.model, self.val, self.shards, self.image_cache = model, list(val), shards, image_cache
        self.classes = class_index(self.val) if self.val else {}
        text = text and shards is None  # T2I needs the val images by path
        captioned = [i for i, r in enumerate(self.val) if r.captions] if text else []
        self.captioned = captioned
        self.texts = _round_robin([self.val[i].captions for i in captioned], MAX_VAL_CAPTIONS)
        self.reference: dict[str, float] | None = None
        self._frozen_i2i: dict[str, float] | None = None
        self.gallery: list[ImageRecord] | None = None
        self.text_hidden = None  # a TextHiddenCache of the captions in self.texts, in that order
        self.image_features: np.ndarray | None = None
        self.text_features: np.ndarray | None = None
        self.text_embeddings: np.ndarray | None = None
        self.image_stems = None  # mcip.image_stems.ImageStems of val: set by a stage with a frozen stem

    def set_gallery(self, records: Sequence[ImageRecord]) -> None:
        """Seen-class validation: val images query these (training) images instead of each other; a
        fixed sample of at most ``MAX_GALLERY`` of them (every ``k``-th record, order kept)."""
        step = max(1, -(-len(records) // MAX_GALLERY))
        self.gallery = list(records)[::step]
        self.classes = class_index([*self.gallery, *self.val])
        self._frozen_i2i = None

    @property
    def caption_texts(self) -> list[str]:
        """The T2I queries' strings, in the order of ``texts`` (what the caches of the text side hold)."""
        return [c for _, c in self.texts]

    @property
    def sides(self) -> tuple[str, ...]:
        return (("i2i",) if self.val else ()) + (("t2i",) if self.captioned else ())

    def metric_for(self, select: str) -> str:
        """The result key that ``select`` (i2i | t2i | combined) picks; fails when it cannot be measured."""
        if select not in SELECT_KEYS:
            raise ConfigError(f"loop.select must be one of auto, {', '.join(SELECT_KEYS)}; got {select!r}.")
        need = ("i2i", "t2i") if select == "combined" else (select,)
        missing = [s for s in need if s not in self.sides]
        if missing:
            what = "captions on the val images" if "t2i" in missing else "val images"
            raise ConfigError(
                f"loop.select={select} needs {what}, which this stage's validation data lacks; give "
                "data.val a manifest with a captions column (or data.captions covering val images), or "
                "choose loop.select=i2i."
            )
        return SELECT_KEYS[select]

    @torch.no_grad()
    def __call__(self, _task=None) -> dict[str, float]:
        restore = _eval_mode(self.model)
        try:
            images, rows = self._images()
            results = {}
            if "i2i" in self.sides:
                results |= self._i2i(images, rows)
            if "t2i" in self.sides:
                results |= self._t2i(images, rows)
        finally:
            restore()
        if self.reference is not None:
            results["combined"] = combined_score(results, self.reference)
        return results

    def calibrate(self, task=None) -> dict[str, float]:
        """Validate the model as it is now and keep the results as the ``combined`` reference."""
        self.reference = None
        results = self(task)
        self.reference = dict(results)
        return {**results, "combined": combined_score(results, self.reference)}

    def _images(self):
        """(M, D) embeddings of the readable val images and their (M,) indices into ``val``."""
        if self.shards is not None:
            return None, None
        if self.image_cache is not None:
            return cached_rows(self.image_cache, range(len(self.val)))
        if self.image_features is not None:
            return cached_rows(project_image_features(self.model, self.image_features), range(len(self.val)))
        if self.image_stems is not None and self.image_stems.matches(self.model):
            return cached_rows(self.image_stems.embeddings(self.model), range(len(self.val)))
        return encode_records(self.model, self.val)

    def _i2i(self, images, rows) -> dict[str, float]:
        if self.image_cache is not None and self._frozen_i2i is not None:
            return self._frozen_i2i  # the image side does not train: computed once
        if self.shards is not None:
            images, labels = encode_shards(self.model, self.shards, self.classes)
        else:
            labels = torch.tensor([self.classes[self.val[i].label] for i in rows.tolist()], dtype=torch.long)
        if self.gallery is not None:
            found, kept = encode_records(self.model, self.gallery)
            gallery_labels = torch.tensor([self.classes[self.gallery[i].label] for i in kept.tolist()])
            ap, hit1 = query_gallery_average_precision(images, labels, found, gallery_labels)
            value = {"i2i_map": 100 * float(ap.nanmean()), "i2i_r1": 100 * float(hit1.nanmean())}
        else:
            value = {"i2i_map": 100 * float(retrieval_average_precision(images, labels).nanmean())}
        if self.image_cache is not None:
            self._frozen_i2i = value
        return value

    def _t2i(self, images, rows) -> dict[str, float]:
        position = {int(r): k for k, r in enumerate(rows.tolist())}
        keep = [position[i] for i in self.captioned if i in position]
        where = {i: k for k, i in enumerate(i for i in self.captioned if i in position)}
        usable = [
            (j, where[self.captioned[k]], c)
            for j, (k, c) in enumerate(self.texts)
            if self.captioned[k] in where
        ]
        if not usable:
            return {}
        chunks = [usable[s : s + 256] for s in range(0, len(usable), 256)]
        if self.text_embeddings is not None:
            encoded = [torch.from_numpy(_float32(self.text_embeddings, [j for j, _, _ in c])) for c in chunks]
        elif self.text_features is not None:
            encoded = [self._project_text([j for j, _, _ in chunk]) for chunk in chunks]
        elif self.text_hidden is not None:
            encoded = [self.text_hidden.encode(self.model, [j for j, _, _ in chunk]) for chunk in chunks]
        else:
            encoded = [self.model.encode_text([c for _, _, c in chunk]) for chunk in chunks]
        text = torch.cat([e.float().cpu() for e in encoded])
        owner = torch.tensor([p for _, p, _ in usable])
        recall = text_to_image_recall(text, images[keep], owner, ks=(1, 5, 10))
        return {f"t2i_r{k}": 100 * v for k, v in recall.items()}

    def _project_text(self, rows: list[int]) -> torch.Tensor:
        feats = torch.from_numpy(_float32(self.text_features, rows)).to(self.model.device, self.model.dtype)
        return torch.nn.functional.normalize(self.model.project_text(feats).float(), dim=-1)


def _float32(array: np.ndarray, rows: list[int]) -> np.ndarray:
    return np.asarray(array[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
