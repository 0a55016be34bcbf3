"""Running stages and pipelines: ``run_stage(config)`` runs one stage; ``run(raw_config)`` runs a stage or a
pipeline, each stage's best model feeding the next (``wise`` steps merge in between). Every stage writes
``OUT/model`` (an mcip model directory), ``config.yaml``, ``metrics.jsonl``, ``summary.json`` and
``checkpoints/``. What a stage builds is its registry entry's (:mod:`mcip.stages.registry`,
:mod:`mcip.stages.gpr`); what it reads is :func:`mcip.stages.inputs.read_inputs`'s.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from mcip.engine.checkpoint import load_state, seed_everything
from mcip.engine.distributed import DistInfo, init_distributed, run_on_main
from mcip.engine.loop import TrainResult, train
from mcip.errors import ConfigError
from mcip.models import load_model, save_model
from mcip.models.base import EmbeddingModel
from mcip.models.checkpoint import META_FILE
from mcip.stages.catalog import stage_entry
from mcip.stages.config import TrainConfig, save_resolved
from mcip.stages.inputs import read_inputs
from mcip.stages.registry import Prepared
from mcip.stages.resolve import plan


@dataclass
class StageResult:
    stage: str
    run_dir: Path
    model_dir: Path
    train: TrainResult


def _freeze_idle_towers(model: EmbeddingModel) -> None:
    """A tower with no trainable parameter runs in eval mode: no dropout, BatchNorm statistics unchanged
    (LiT-style alignment with a frozen image tower must not drift its BN statistics)."""
    for part in ("image_encoder", "text_encoder"):
        module = getattr(model, part)
        if isinstance(module, torch.nn.Module) and not any(p.requires_grad for p in module.parameters()):
            module.eval()


def select_metric(prepared: Prepared, cfg: TrainConfig) -> str | None:
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
        return stage_entry(cfg.stage).val_metric
    if select == "i2i" and stage_entry(cfg.stage).trains == "text":
        raise ConfigError(
            f"loop.select=i2i cannot pick a {cfg.stage} checkpoint: the stage never changes image "
            "embeddings. Use t2i or combined."
        )
    return prepared.validate.metric_for(select)


def _preflight(prepared: Prepared, cfg: TrainConfig, dist: DistInfo, progress: bool):
    """Validate the starting model once before the first step, on the real val data: a broken
    validation fails in the first minute, never after an epoch; its results are step 0 of the run and
    the reference of ``combined``. Returns (val_metric, the starting model's results)."""
    val_metric = select_metric(prepared, cfg)
    if prepared.validate is None:
        return val_metric, None
    from mcip.engine.progress import run_validation

    validator = prepared.validate
    initial = run_on_main(lambda: run_validation(validator.calibrate, prepared.task), dist)
    validator.reference = {k: v for k, v in initial.items() if k != "combined"}
    if dist.is_main and progress:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in initial.items())
        print(f"{cfg.stage}: the starting model on val: {shown} (selecting on {val_metric})")
    return val_metric, initial


def run_stage(cfg: TrainConfig, resume: bool = False, progress: bool = True, on_validate=None) -> StageResult:
    """Run one stage described by a resolved config; returns where the trained model was written.
    ``on_validate``: see :func:`mcip.engine.loop.train` (called after each validation; True stops)."""
    spec = stage_entry(cfg.stage)
    if spec.builder is None:
        raise ConfigError(f"'{cfg.stage}' is a pipeline step, not a stage; run it in a pipeline.")
    dist = init_distributed()
    seed_everything(cfg.loop.seed)  # what is built before training (a loss head) depends on the seed only
    run_dir = Path(cfg.out)
    if dist.rank == 0:
        save_resolved(cfg, run_dir / "config.yaml")
    model = _starting_model(cfg, dist)
    inputs = read_inputs(cfg)
    prepared = spec.builder(model, cfg, inputs, dist)
    if inputs.seen and prepared.validate is not None:
        prepared.validate.set_gallery(inputs.train)
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
        on_validate=on_validate,
    )
    best = result.best_checkpoint or result.last_checkpoint
    if best is not None:
        prepared.task.load_state_dict(load_state(best)["task"])
    model_dir = run_dir / "model"
    if dist.rank == 0:
        _save_trained(model, model_dir, cfg, result, (val_metric, initial))
    return StageResult(cfg.stage, run_dir, model_dir, result)


def _starting_model(cfg: TrainConfig, dist: DistInfo) -> EmbeddingModel:
    model = load_model(
        cfg.model.spec, device=dist.device, drop_projector=cfg.model.drop_projector, **cfg.model.kwargs
    )
    model.set_grad_checkpointing(cfg.model.grad_checkpointing)
    model.freeze_bn_stats(cfg.model.freeze_bn_stats)
    return model


def _save_trained(model: EmbeddingModel, model_dir: Path, cfg: TrainConfig, result, start: tuple) -> None:
    """The trained model (its best checkpoint's weights) with what chose it and the resolved config;
    ``start``: (the validation key selected on, the starting model's val results)."""
    val_metric, initial = start
    extra = {
        "stage": cfg.stage,
        "best_step": result.best_step,
        "best_metric": result.best_metric,
        "val_metric": val_metric,
        "start_metrics": initial,
        "config": cfg.to_dict(),
    }
    save_model(model, model_dir, extra=json.loads(json.dumps(extra, default=str)))


def _wise_steps(configs: list[TrainConfig]) -> dict[int, Any]:
    """The pipeline's ``wise`` steps by position (1-based), each checked now (its val split exactly as the
    stages compute it, ``select``), before the first stage trains (mcip.stages.wise_step)."""
    from mcip.stages.inputs import read_records
    from mcip.stages.wise_step import WiseStep

    return {
        i: WiseStep(cfg, configs[0], configs[i - 2], read_records(cfg))
        for i, cfg in enumerate(configs, start=1)
        if cfg.stage == "wise" and i > 1
    }


def run(raw: dict[str, Any], resume: bool = False, progress: bool = True) -> list[StageResult]:
    """Run the stage or pipeline in ``raw`` (see mcip.stages.resolve.load_config)."""
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
        done = Path(stage_cfg.out) / "model" / META_FILE
        if resume and done.is_file():
            results.append(StageResult(cfg.stage, Path(stage_cfg.out), done.parent, None))  # type: ignore[arg-type]
        elif i in wise:  # WiSE-FT: the start merged with the previous stage's model
            trained = wise[i].run(stage_cfg, progress)
            results.append(StageResult(cfg.stage, Path(stage_cfg.out), done.parent, trained))
        else:
            results.append(run_stage(stage_cfg, resume, progress))
        spec = str(results[-1].model_dir)
    return results
