"""The training loop. It only knows ``task(batch)["loss"]``: models and losses live in the Task.

One optimizer step = ``grad_accum`` micro-batches: forward under autocast (bf16, or fp16 with a
GradScaler), ``backward(loss / grad_accum)`` (DDP all-reduces only on the last micro-batch), then
unscale -> clip -> AdamW step -> cosine schedule step. Checkpoints hold everything needed to continue
mid-epoch from the next batch with the same random numbers (see :func:`train`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from torch import nn

from mcip.engine import distributed as D
from mcip.engine.distributed import DistInfo
from mcip.engine.loop_config import DataSource, LoopConfig, ValidationHook
from mcip.engine.optim import PRECISIONS, OptimConfig, resolve_precision
from mcip.engine.result import TrainResult
from mcip.engine.trainer import Trainer
from mcip.errors import ConfigError

__all__ = ["PRECISIONS", "DataSource", "LoopConfig", "TrainResult", "resolve_precision", "train"]


def _check_args(task: nn.Module, head: list, data: DataSource, cfg: LoopConfig, validate, val_metric) -> None:
    owned = {id(p) for p in task.parameters()}
    if any(id(p) not in owned for p in head):
        raise ConfigError(
            "head_params must be parameters of the task (e.g. task.loss.centres) so that checkpoints "
            "save them: make the loss a submodule of the task."
        )
    if not hasattr(data, "batches_per_epoch") or not callable(getattr(data, "iterate", None)):
        raise ConfigError("data must have batches_per_epoch and iterate(epoch, start_batch) (DataSource).")
    if data.batches_per_epoch < cfg.grad_accum:
        raise ConfigError(
            f"An epoch has {data.batches_per_epoch} batches, fewer than grad_accum={cfg.grad_accum}; "
            "lower grad_accum or the batch size."
        )
    if validate is None and (val_metric or cfg.val_every or cfg.early_stopping_patience):
        raise ConfigError("val_metric, val_every and early_stopping_patience need a validate function.")
    if cfg.early_stopping_patience and val_metric is None:
        raise ConfigError("early_stopping_patience needs val_metric (the validation key to improve).")
    if len(set(D.all_gather_object(data.batches_per_epoch))) > 1:
        raise ConfigError("Every rank must have the same batches_per_epoch; shard the data evenly.")


def train(
    task: nn.Module,
    data: DataSource,
    optim_cfg: OptimConfig,
    loop_cfg: LoopConfig,
    run_dir: str | Path,
    head_params: Iterable[nn.Parameter] = (),
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    val_metric: str | None = None,
    resume: bool = False,
    dist: DistInfo | None = None,
    progress: bool = True,
    initial_val: dict[str, float] | None = None,
    start_candidate: bool = False,
    on_validate: ValidationHook | None = None,
) -> TrainResult:
    """Train ``task`` (``task(batch) -> {"loss": scalar, **scalar logs}``) on ``data``.

    Writes ``run_dir/metrics.jsonl`` (training averages every ``log_every`` steps, ``val/...`` records),
    ``run_dir/checkpoints/`` (every ``checkpoint_every`` steps, on a new best ``val_metric`` (higher is
    better), at the end and on a stop signal) and ``run_dir/summary.json``. SIGTERM, SIGUSR1 and Ctrl-C
    finish the current step, checkpoint it and raise :class:`~mcip.engine.preempt.TrainingInterrupted`
    (see :mod:`mcip.engine.preempt`; a second Ctrl-C stops at once). ``validate(task)`` runs on rank 0
    in eval mode under ``no_grad``, with the RNG streams saved and restored around it, every
    ``val_every`` steps and at each epoch end. ``resume=True`` continues from the newest checkpoint
    in ``run_dir`` at the next batch of its epoch. ``dist`` defaults to the running process group
    (see :func:`mcip.engine.distributed.init_distributed`). ``progress`` shows the bar and prints the
    summary on rank 0. ``initial_val``: the validation results of the model before training (see
    :class:`mcip.engine.validate.Validator`); a fresh run logs them at step 0, and with
    ``start_candidate`` counts them as a candidate for the best checkpoint (checkpointed at step 0).
    ``on_validate(epoch, step, results)`` is called after every validation of the run (with the same
    results on every rank; ``epoch`` fractional as in the logs); when it returns True the run stops there
    as early stopping would (the best checkpoint so far is kept): a recipe search prunes trials with it.
    """
    head_params = list(head_params)
    _check_args(task, head_params, data, loop_cfg, validate, val_metric)
    kw = dict(run_dir=run_dir, head_params=head_params, validate=validate, val_metric=val_metric)
    kw |= {"initial_val": initial_val, "start_candidate": start_candidate, "on_validate": on_validate}
    trainer = Trainer(task, data, optim_cfg, loop_cfg, dist=dist, progress=progress, **kw)
    return trainer.run(resume)
