"""The paper's stages as library functions: each builds a Task, its data and its validation, then trains.

``run_stage(config)`` runs one stage; ``run(raw_config)`` runs a stage or a pipeline, each stage's best
model feeding the next. Every stage writes ``OUT/model`` (an mcip model directory), ``config.yaml``,
``metrics.jsonl``, ``summary.json`` and ``checkpoints/``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

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
from mcip.data.pairs import CollatePairs, SampledCaptionDataset
from mcip.errors import ConfigError, InputError
from mcip.losses import ArcMarginLoss, InfoNCELoss, MCIPLoss, SigLIPLoss
from mcip.models import load_model, save_model, set_trainable_parts, unlock_last_text_blocks
from mcip.models.base import EmbeddingModel
from mcip.train.checkpoint import load_state, seed_everything
from mcip.train.config import TrainConfig, plan, save_resolved
from mcip.train.distributed import DistInfo, init_distributed, run_on_main
from mcip.train.features import (
    caption_embeddings,
    default_cache_dir,
    frozen_image_features,
    frozen_text_features,
    image_embeddings,
)
from mcip.train.loop import TrainResult, train
from mcip.train.task import AlignTask, DriftGuard, GPRTask, MCIPTask, RealignTask
from mcip.train.text_cache import no_tokens, realign_text_cache
from mcip.train.validate import Validator

IMAGE_SIDE = ("image_encoder", "image_projector")


@dataclass
class StageResult:
    stage: str
    run_dir: Path
    model_dir: Path
    train: TrainResult


@dataclass
class Prepared:
    """What a stage builder hands to the loop."""

    task: torch.nn.Module
    data: Any
    head_params: tuple
    validate: Validator | None
    val_metric: str | None  # the stage's own selection key (``loop.select=auto``)


# ------------------------------------------------------------------ shared pieces
VAL_MODES = ("auto", "unseen_classes", "seen_classes")


def _records(cfg: TrainConfig):
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
    return records, val, _seen_classes(mode, records, val)


def _seen_classes(mode: str, train, val) -> bool:
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


def _sampler(cfg: TrainConfig, n: int, labels: list[int] | None, dist: DistInfo):
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


def _shards(cfg: TrainConfig) -> list[str] | None:
    return [str(s) for s in list_shards(cfg.data.train)] if is_shard_source(cfg.data.train) else None


def _image_loader(model: EmbeddingModel, cfg: TrainConfig, train, dist: DistInfo):
    classes = class_index(train)
    shards = _shards(cfg)
    if shards is not None:  # samples of held-out (val) classes are left out by class_to_index
        dataset = ShardDataset(
            shards, model.train_transform, classes, dist.rank, dist.world_size, cfg.data.seed
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
    sampler = _sampler(cfg, len(dataset), labels, dist)
    return ResumableLoader(dataset, sampler, collate_images, num_workers=cfg.data.num_workers), classes


def _cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def _contrastive_loss(cfg: TrainConfig, model: EmbeddingModel):
    if cfg.loss.contrastive == "siglip":
        if not model.has_logit_bias():
            raise ConfigError("loss.contrastive=siglip needs a model with a logit bias (a SigLIP model).")
        return SigLIPLoss()
    return InfoNCELoss()


def _text_matches(model: EmbeddingModel) -> bool:
    """True when text embeddings live in the image embedding's space (not after drop_projector)."""
    with torch.no_grad():
        return model.encode_text(["a"]).shape[-1] == model.embed_dim


def _validator(model: EmbeddingModel, val, shards=None, image_cache=None) -> Validator | None:
    """Both sides of the validation that ``val`` allows (see mcip.train.validate)."""
    if not val:
        return None
    return Validator(model, val, shards=shards, image_cache=image_cache, text=_text_matches(model))


def _captioned(records, what: str):
    kept = [r for r in records if r.captions]
    if not kept:
        raise InputError(
            f"The {what} stage needs captions, but none of the {len(records)} images has any. "
            "Pass data.captions=SIDECAR.jsonl (see `mcip captions`) or a manifest with a captions column."
        )
    return kept


# ------------------------------------------------------------------ stages
def _init_centres(arc: ArcMarginLoss, model: EmbeddingModel, cfg: TrainConfig, train, classes) -> None:
    """``loss.centre_init=class_means``: centres start at the class means of the starting model's
    embeddings (eval transform, cached); xavier (the paper) leaves them as they are."""
    if cfg.loss.centre_init != "class_means":
        return
    if is_shard_source(cfg.data.train):
        raise ConfigError("loss.centre_init=class_means needs a manifest or an image folder, not tar shards.")
    emb = np.asarray(image_embeddings(model, train, _cache_dir(cfg)), dtype=np.float32)
    ok = ~np.isnan(emb[:, 0])
    labels = torch.tensor([classes[r.label] for r, good in zip(train, ok, strict=True) if good])
    arc.init_from_class_means(torch.from_numpy(emb[ok]).to(arc.weight.device), labels.to(arc.weight.device))


def _drift_guard(model: EmbeddingModel, cfg: TrainConfig) -> DriftGuard | None:
    """A frozen copy of the starting model for ``loss.distill_weight`` > 0 (taken before any step)."""
    if not cfg.loss.distill_weight:
        return None
    return DriftGuard(copy.deepcopy(model), cfg.loss.distill_weight)


def prepare_gpr(model, cfg, train, val, dist) -> Prepared:
    set_trainable_parts(model, IMAGE_SIDE)
    data, classes = _image_loader(model, cfg, train, dist)
    validate = _validator(model, val, shards=_shards(cfg))
    loss = ArcMarginLoss(len(classes), model.embed_dim, cfg.loss.scale, cfg.loss.margin, cfg.loss.sub_centers)
    _init_centres(loss, model, cfg, train, classes)
    task = GPRTask(model, loss.to(dist.device), _drift_guard(model, cfg))
    return Prepared(task, data, tuple(loss.parameters()), validate, "i2i_map")


def _no_shards(cfg: TrainConfig, stage: str) -> None:
    if is_shard_source(cfg.data.train):
        raise ConfigError(
            f"The {stage} stage reads captions per record and needs a manifest or an image folder; tar shards "
            "are supported by the gpr stage only so far. Convert with a manifest (path,label,captions)."
        )


def prepare_mcip(model, cfg, train, val, dist) -> Prepared:
    if model.modifications.get("drop_image_projector"):
        raise ConfigError("The mcip stage trains the joint embedding; remove model.drop_projector.")
    _no_shards(cfg, "mcip")
    _captioned(train, "mcip")
    set_trainable_parts(model, IMAGE_SIDE)
    captions = caption_embeddings(model, train, _cache_dir(cfg))
    data, classes = _image_loader(model, cfg, train, dist)
    c = cfg.loss
    loss = MCIPLoss(
        len(classes),
        model.embed_dim,
        c.arc_weight,
        c.mc_weight,
        c.scale,
        c.margin,
        c.sub_centers,
        c.hard_caption_weight,
    ).to(dist.device)
    _init_centres(loss.arc, model, cfg, train, classes)
    task = MCIPTask(model, loss, captions.rows_for, _drift_guard(model, cfg))
    return Prepared(task, data, tuple(loss.arc.parameters()), _validator(model, val), "i2i_map")


def prepare_realign(model, cfg, train, val, dist) -> Prepared:
    _no_shards(cfg, "realign")
    train = _captioned(train, "realign")
    features = image_embeddings(model, train, _cache_dir(cfg))
    readable = ~np.isnan(np.asarray(features[:, 0], dtype=np.float32))
    train = [r for r, ok in zip(train, readable, strict=True) if ok]
    features = features[np.flatnonzero(readable)] if not readable.all() else features
    _match_text_width(model, cfg, train, features)
    unlock_last_text_blocks(model, cfg.unlock_text_blocks)
    dataset = SampledCaptionDataset(train)
    sampler = _sampler(cfg, len(dataset), None, dist)
    hidden = realign_text_cache(model, cfg, train, _cache_dir(cfg))  # None: the full tower every step
    collate = CollatePairs(model.tokenize if hidden is None else no_tokens)
    data = ResumableLoader(dataset, sampler, collate, num_workers=0)
    task = RealignTask(model, features, _contrastive_loss(cfg, model).to(dist.device), hidden)
    val_features = image_embeddings(model, val, _cache_dir(cfg)) if val else None
    return Prepared(task, data, (), _validator(model, val, image_cache=val_features), "t2i_r5")


def prepare_align(model, cfg, train, val, dist) -> Prepared:
    """Contrastive alignment of ``align_parts``. A frozen encoder runs once: its pooled features are cached
    (images with the eval transform, so no augmentation) and only what follows it trains per step."""
    _no_shards(cfg, "align")
    train = _captioned(train, "align")
    set_trainable_parts(model, cfg.align_parts)
    image_feats = text_feats = None
    if "image_encoder" not in cfg.align_parts:
        image_feats = frozen_image_features(model, train, _cache_dir(cfg))
        readable = ~np.isnan(image_feats[:, 0])
        if not readable.all():
            train = [r for r, ok in zip(train, readable, strict=True) if ok]
            image_feats = np.asarray(image_feats[np.flatnonzero(readable)])
    if "text_encoder" not in cfg.align_parts:
        text_feats = frozen_text_features(model, train, _cache_dir(cfg))
    images = (
        None if image_feats is not None else ImageDataset(train, model.train_transform, class_index(train))
    )
    dataset = SampledCaptionDataset(train, images)
    sampler = _sampler(cfg, len(dataset), None, dist)
    workers = cfg.data.num_workers if images is not None else 0
    data = ResumableLoader(dataset, sampler, CollatePairs(model.tokenize), num_workers=workers)
    loss = _contrastive_loss(cfg, model).to(dist.device)
    task = AlignTask(model, loss, image_feats, text_feats)
    return Prepared(task, data, (), _validator(model, val), "t2i_r5")


STAGE_BUILDERS: dict[str, Callable[..., Prepared]] = {
    "gpr": prepare_gpr,
    "mcip": prepare_mcip,
    "realign": prepare_realign,
    "align": prepare_align,
}


def _match_text_width(model: EmbeddingModel, cfg: TrainConfig, train, features) -> None:
    """After drop_projector the image embedding is wider/narrower than the text one: fit a new text
    projector (least squares on the cached pairs, or random)."""
    with torch.no_grad():
        text_width = model.encode_text(["a"]).shape[-1]
    if text_width == model.embed_dim:
        return
    weight = None
    if cfg.realign_init == "lstsq":
        weight = lstsq_text_projector(model, train, features)
    model.replace_text_projector(model.embed_dim, weight)


@torch.no_grad()
def lstsq_text_projector(model: EmbeddingModel, train, features, max_pairs: int = 8192) -> torch.Tensor:
    """(F_txt, D) minimising ||text_features W - image_embedding||^2 over (first caption, image) pairs."""
    n = min(len(train), max_pairs)
    texts = [r.captions[0] for r in train[:n]]
    feats = (
        torch.cat(
            [
                model.text_features(
                    {k: v.to(model.device) for k, v in model.tokenize(texts[i : i + 256]).items()}
                )
                for i in range(0, n, 256)
            ]
        )
        .float()
        .cpu()
    )
    target = torch.from_numpy(np.asarray(features[:n], dtype=np.float32))
    return torch.linalg.lstsq(feats, target).solution


def _freeze_idle_towers(model: EmbeddingModel) -> None:
    """A tower with no trainable parameter runs in eval mode: no dropout, BatchNorm statistics unchanged
    (LiT-style alignment with a frozen image tower must not drift its BN statistics)."""
    for part in ("image_encoder", "text_encoder"):
        module = getattr(model, part)
        if isinstance(module, torch.nn.Module) and not any(p.requires_grad for p in module.parameters()):
            module.eval()


# ------------------------------------------------------------------ running
def _select_metric(prepared: Prepared, cfg: TrainConfig) -> str | None:
    """The validation key that picks the best checkpoint (``loop.select``; auto = the stage's own)."""
    select = cfg.loop.select
    if prepared.validate is None:
        if select != "auto":
            raise ConfigError(
                f"loop.select={select} needs validation data, but this stage has none; give data.val "
                "(a manifest of held-out images) or a data.val_fraction > 0."
            )
        return None
    if select == "auto":
        return prepared.val_metric
    if select == "i2i" and cfg.stage == "realign":
        raise ConfigError(
            "loop.select=i2i cannot pick a Re-A checkpoint: Re-A never changes image embeddings. Use t2i "
            "or combined."
        )
    return prepared.validate.metric_for(select)


def _preflight(prepared: Prepared, cfg: TrainConfig, dist: DistInfo, progress: bool):
    """Validate the starting model once before the first step, on the real val data: a broken
    validation fails in the first minute, never after an epoch; its results are step 0 of the run and
    the reference of ``combined``. Returns (val_metric, the starting model's results)."""
    val_metric = _select_metric(prepared, cfg)
    if prepared.validate is None:
        return val_metric, None
    from mcip.train.progress import run_validation

    validator = prepared.validate
    initial = run_on_main(lambda: run_validation(validator.calibrate, prepared.task), dist)
    validator.reference = {k: v for k, v in initial.items() if k != "combined"}
    if dist.is_main and progress:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in initial.items())
        print(f"{cfg.stage}: the starting model on val: {shown} (selecting on {val_metric})")
    return val_metric, initial


def run_stage(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> StageResult:
    """Run one stage described by a resolved config; returns where the trained model was written."""
    dist = init_distributed()
    seed_everything(cfg.loop.seed)  # what is built before training (a loss head) depends on the seed only
    run_dir = Path(cfg.out)
    if dist.rank == 0:
        save_resolved(cfg, run_dir / "config.yaml")
    model = load_model(
        cfg.model.spec, device=dist.device, drop_projector=cfg.model.drop_projector, **cfg.model.kwargs
    )
    model.set_grad_checkpointing(cfg.model.grad_checkpointing)
    model.freeze_bn_stats(cfg.model.freeze_bn_stats)
    train_records, val_records, seen = _records(cfg)
    prepared = STAGE_BUILDERS[cfg.stage](model, cfg, train_records, val_records, dist)
    if seen and prepared.validate is not None:
        prepared.validate.set_gallery(train_records)
    val_metric, initial = _preflight(prepared, cfg, dist, progress)
    prepared.task.train()
    _freeze_idle_towers(model)
    result = train(
        prepared.task,
        prepared.data,
        cfg.optim,
        cfg.loop,
        run_dir,
        head_params=prepared.head_params,
        validate=prepared.validate,
        val_metric=val_metric,
        resume=resume,
        dist=dist,
        progress=progress,
        initial_val=initial,
        start_candidate=cfg.loop.select == "combined",  # the guard: never end worse than the start
    )
    best = result.best_checkpoint or result.last_checkpoint
    if best is not None:
        prepared.task.load_state_dict(load_state(best)["task"])
    model_dir = run_dir / "model"
    if dist.rank == 0:
        extra = {
            "stage": cfg.stage,
            "best_step": result.best_step,
            "best_metric": result.best_metric,
            "val_metric": val_metric,
            "start_metrics": initial,
            "config": cfg.to_dict(),
        }
        save_model(model, model_dir, extra=json.loads(json.dumps(extra, default=str)))
    return StageResult(cfg.stage, run_dir, model_dir, result)


def _wise_steps(configs: list[TrainConfig]) -> dict[int, Any]:
    """The pipeline's ``wise`` steps by position (1-based), each checked now (its val split exactly as the
    stages compute it, ``select``), before the first stage trains (mcip.train.wise_step)."""
    from mcip.train.wise_step import WiseStep

    return {
        i: WiseStep(cfg, configs[0], configs[i - 2], _records(cfg))
        for i, cfg in enumerate(configs, start=1)
        if cfg.stage == "wise" and i > 1
    }


def run(raw: dict[str, Any], resume: bool = False, progress: bool = True) -> list[StageResult]:
    """Run the stage or pipeline in ``raw`` (see mcip.train.config.load_config)."""
    configs = plan(raw)
    if len(configs) == 1:
        return [run_stage(configs[0], resume, progress)]
    results: list[StageResult] = []
    wise = _wise_steps(configs)
    out = Path(configs[0].out)
    if init_distributed().rank == 0:  # `mcip train OUT/config.yaml --resume` continues the pipeline
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = configs[0].model.spec
    for i, cfg in enumerate(configs, start=1):
        stage_cfg = dataclasses.replace(
            cfg,
            out=str(out / f"{i:02d}-{cfg.stage}"),
            model=dataclasses.replace(  # later stages load the previous mcip model as saved
                cfg.model,
                spec=spec,
                drop_projector=cfg.model.drop_projector and i == 1,
                kwargs=cfg.model.kwargs if i == 1 else {},
            ),
        )
        done = Path(stage_cfg.out) / "model" / "mcip_model.json"
        if resume and done.is_file():
            results.append(StageResult(cfg.stage, Path(stage_cfg.out), done.parent, None))  # type: ignore[arg-type]
        elif i in wise:  # WiSE-FT: the start merged with the previous stage's model
            trained = wise[i].run(stage_cfg, progress)
            results.append(StageResult(cfg.stage, Path(stage_cfg.out), done.parent, trained))
        else:
            results.append(run_stage(stage_cfg, resume, progress))
        spec = str(results[-1].model_dir)
    return results
