"""What a stage reads: the training and validation records, decided once per run.

:func:`read_inputs` reads ``data.train`` (a manifest, an image folder or tar shards: :attr:`TrainInputs.kind`),
attaches the caption sidecar, and splits off or reads the validation images (``data.val``,
``data.val_fraction`` and ``data.val_mode``); the stage builders (``mcip.stages.gpr``) get the result
and the loaders below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mcip.data import (
    ClassBalancedBatchSampler,
    EpochBatchSampler,
    ImageDataset,
    ResumableLoader,
    ResumableShardLoader,
    ShardDataset,
    attach_captions,
    class_index,
    collate_images,
    list_shards,
    load_records,
    read_caption_sidecar,
    split_by_class,
    split_within_classes,
)
from mcip.data.manifest import is_shard_source
from mcip.data.records import ImageRecord
from mcip.engine.distributed import DistInfo
from mcip.errors import ConfigError, InputError
from mcip.models.base import EmbeddingModel

if TYPE_CHECKING:
    from mcip.stages.config import TrainConfig

VAL_MODES = ("auto", "unseen_classes", "seen_classes")
SourceKind = Literal["shards", "records"]


@dataclass
class TrainInputs:
    """The records of one stage: ``train`` and ``val`` (empty: no validation), ``seen`` (val classes also
    train, so val images query the training images), and ``shards`` (the tar shards when ``data.train``
    is webdataset shards, else None). Records read from shards have ``path = SHARD#KEY``
    (:mod:`mcip.data.shard_ref`), so stages that read images per record (mcip, realign, align) read
    them as they read files, in the same order as the manifest the shards were written from."""

    train: list[ImageRecord]
    val: list[ImageRecord]
    seen: bool
    shards: list[str] | None

    @property
    def kind(self) -> SourceKind:
        return "shards" if self.shards is not None else "records"


def read_inputs(cfg: TrainConfig) -> TrainInputs:
    """The stage's records (see :class:`TrainInputs`); the source kind is decided here, once."""
    train, val, seen = read_records(cfg)
    shards = [str(s) for s in list_shards(cfg.data.train)] if is_shard_source(cfg.data.train) else None
    return TrainInputs(list(train), list(val), seen, shards)


def read_records(cfg: TrainConfig):
    """(train, val, seen): ``data.val`` when given, else ``data.val_fraction`` held out (whole classes,
    or a fraction of each class's images under ``data.val_mode=seen_classes``); ``seen`` tells whether
    the val classes also train (then val images query the training images)."""
    enc = cfg.data.encoding
    records = load_records(cfg.data.train, cfg.data.root, enc)
    sidecar = read_caption_sidecar(cfg.data.captions, enc) if cfg.data.captions else None
    if sidecar is not None:
        records = attach_captions(records, sidecar, cfg.data.max_captions)
    mode = cfg.data.val_mode
    if mode not in VAL_MODES:
        raise ConfigError(f"data.val_mode must be one of {', '.join(VAL_MODES)}, got {mode!r}.")
    if not cfg.data.val:
        if mode == "seen_classes":
            return *split_within_classes(records, cfg.data.val_fraction, cfg.data.seed), True
        return *split_by_class(records, cfg.data.val_fraction, cfg.data.seed), False
    val = load_records(cfg.data.val, cfg.data.root, enc)  # its own captions (T2I validation), no sidecar
    return records, val, seen_classes(mode, records, val)


def seen_classes(mode: str, train, val) -> bool:
    """Check ``data.val`` against ``data.val_mode``; True for seen-class validation."""
    trained = {r.label for r in train}
    labels = {r.label for r in val}
    shared, new = sorted(labels & trained), sorted(labels - trained)
    if mode == "unseen_classes" and shared:
        raise InputError(
            f"data.val shares {len(shared)} class(es) with data.train (e.g. {shared[0]!r}), but "
            "data.val_mode=unseen_classes measures generalisation to classes never trained on: hold out "
            "whole classes, or set data.val_mode=seen_classes (or auto) to validate on other images of "
            "trained classes."
        )
    seen = mode == "seen_classes" or (mode == "auto" and bool(shared))
    if seen and new:
        raise InputError(
            f"Seen-class validation: {len(new)} of the {len(labels)} data.val classes never appear in "
            f"data.train (e.g. {new[0]!r}), so their images have nothing to find among the training "
            "images. Remove them from data.val, or validate on unseen classes only (data.val_mode="
            "unseen_classes with a data.val that shares no class with data.train)."
        )
    return seen


def captioned(records, what: str):
    """The records with captions; none at all is an error that says where captions come from."""
    kept = [r for r in records if r.captions]
    if not kept:
        raise InputError(
            f"The {what} stage needs captions, but none of the {len(records)} images has any. "
            "Pass data.captions=SIDECAR.jsonl (see `mcip captions`) or a manifest with a captions column."
        )
    return kept


def batch_sampler(cfg: TrainConfig, n: int, labels: list[int] | None, dist: DistInfo):
    d = cfg.data
    if d.balanced_m and labels is not None:
        return ClassBalancedBatchSampler(
            labels, d.balanced_m, d.batch_size, d.seed, dist.rank, dist.world_size
        )
    if n < d.batch_size * dist.world_size:
        # images decode lazily: probe the first few, so that "too few" names unreadable files if that is why
        from mcip.data.readable import describe_unreadable

        why = "" if is_shard_source(d.train) else describe_unreadable(d.train, d.root, d.encoding)
        raise InputError(
            f"Only {n} training items for a batch of {d.batch_size} x {dist.world_size} rank(s); "
            + (f"{why} Then " if why else "")
            + "lower data.batch_size or add data."
        )
    return EpochBatchSampler(n, d.batch_size, d.seed, rank=dist.rank, world_size=dist.world_size)


def image_loader(
    model: EmbeddingModel, cfg: TrainConfig, inputs: TrainInputs, dist: DistInfo, stream: bool = True
):
    """(a resumable loader of augmented training images with class indices, the class index).

    From shards, ``stream=True`` reads them in sequence (``ShardDataset``: shard order and a shuffle
    buffer); ``stream=False`` reads the records by index (``SHARD#KEY``), as from a manifest: a stage whose
    batches must carry record indices (mcip: the captions of each image) asks for that."""
    train = inputs.train
    classes = class_index(train)
    # streaming: samples of held-out (val) classes are left out by class_to_index
    if inputs.shards is not None and stream:
        dataset = ShardDataset(
            inputs.shards, model.train_transform, classes, dist.rank, dist.world_size, cfg.data.seed
        )
        loader = ResumableShardLoader(
            dataset,
            cfg.data.batch_size,
            collate_images,
            num_records=len(train),
            num_workers=cfg.data.num_workers,
        )
        return loader, classes
    labels = [classes[r.label] for r in train]
    dataset = ImageDataset(train, model.train_transform, classes)
    sampler = batch_sampler(cfg, len(dataset), labels, dist)
    return ResumableLoader(dataset, sampler, collate_images, num_workers=cfg.data.num_workers), classes
