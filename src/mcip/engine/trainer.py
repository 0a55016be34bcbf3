"""The training loop's state and steps (:class:`Trainer`), run by :func:`mcip.engine.loop.train`.

One optimizer step = ``grad_accum`` micro-batches: forward under autocast (bf16, or fp16 with a
GradScaler), ``backward(loss / grad_accum)`` (DDP all-reduces only on the last micro-batch), then
unscale -> clip -> AdamW step -> cosine schedule step. Checkpoints hold everything needed to continue
mid-epoch from the next batch with the same random numbers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcip.engine import distributed as D
from mcip.engine.checkpoint import (
    RunPosition,
    Selection,
    TrainingCheckpoints,
    load_state,
    pack_training_state,
    seed_everything,
    unpack_training_state,
)
from mcip.engine.distributed import DistInfo, move_to, wrap_ddp
from mcip.engine.loop_config import DataSource, LoopConfig, ValidationHook
from mcip.engine.optim import AmpOptimizer, OptimConfig, param_groups
from mcip.engine.preempt import StopSignals, TrainingInterrupted
from mcip.engine.progress import Reporter, SkipCounter, run_validation
from mcip.engine.result import TrainResult
from mcip.errors import ConfigError, InputError

log = logging.getLogger(__name__)


def _loss_of(out: Any) -> torch.Tensor:
    loss = out.get("loss") if isinstance(out, dict) else None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise InputError(
            "task(batch) must return a dict with a scalar tensor under 'loss' (plus optional scalar "
            f"logs); got {type(out).__name__} with loss={type(loss).__name__}."
        )
    return loss.reshape(()).float()


class Trainer:
    """One run of :func:`mcip.engine.loop.train` (its arguments in ``kw``)."""

    def __init__(self, task: nn.Module, data: DataSource, optim_cfg: OptimConfig, cfg: LoopConfig, **kw):
        self.task, self.data, self.optim_cfg, self.cfg = task, data, optim_cfg, cfg
        self.validate_fn, self.val_metric = kw["validate"], kw["val_metric"]
        self.dist: DistInfo = kw["dist"] or D.current()
        self.run_dir = Path(kw["run_dir"])
        self.report = Reporter(self.run_dir, self.dist, kw["progress"])
        self.usable = data.batches_per_epoch // cfg.grad_accum * cfg.grad_accum  # whole windows only
        self.total_steps = cfg.max_steps or cfg.epochs * self.usable // cfg.grad_accum
        self.n_epochs = math.ceil(self.total_steps / (self.usable // cfg.grad_accum))
        task.to(self.dist.device)
        groups = param_groups(task.named_parameters(), kw["head_params"], optim_cfg)
        amp = (cfg.clip_grad_norm, cfg.precision, self.dist.device)
        self.opt = AmpOptimizer(groups, optim_cfg, self.total_steps, *amp)
        self.ckpts = TrainingCheckpoints(self.run_dir, cfg.keep_last)
        self.skips, self.pos = SkipCounter(cfg.max_skipped_fraction), RunPosition()
        self.lrs, self.last_ckpt_step = self.opt.lrs(), -1
        self.selection = Selection(self.val_metric, cfg.early_stopping_patience)
        self.initial_val: dict[str, float] | None = kw.get("initial_val")
        self.start_candidate: bool = kw.get("start_candidate", False)
        self.on_validate: ValidationHook | None = kw.get("on_validate")
        self.synced = False

    def _resume(self, path: str) -> None:
        state = load_state(path)
        mine = unpack_training_state(state, self.task, self.opt, self.dist.rank)
        self.pos = RunPosition(**{f.name: state[f.name] for f in fields(RunPosition)})
        self.selection, self.last_ckpt_step = Selection(**state["selection"]), self.pos.step
        if mine is None or len(state["ranks"]) != self.dist.world_size:
            log.warning(
                "Resuming %d ranks from a %d-rank checkpoint.", self.dist.world_size, len(state["ranks"])
            )
        if mine is not None:
            self.skips.load_state_dict(mine["skips"])

    def run(self, resume: bool) -> TrainResult:
        seed_everything(self.cfg.seed + self.dist.rank)
        latest = self.ckpts.latest() if self.dist.is_main else None
        latest = D.broadcast_object(None if latest is None else str(latest))
        if resume and latest is not None:
            self._resume(latest)
            if self.dist.is_main:
                print(f"resumed from step {self.pos.step} of {self.total_steps} ({latest})", flush=True)
        elif resume:
            log.warning("resume=True but %s holds no checkpoint; starting from scratch.", self.ckpts.dir)
        elif latest is not None:
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints of a run; pass resume=True to continue it "
                "or choose a new run folder."
            )
        self.report.truncate_after(self.pos.step)  # records a resumed run will write again
        self.ddp = wrap_ddp(self.task, self.dist) if self.dist.world_size > 1 else None
        model = self.ddp or self.task
        self.model = torch.compile(model) if self.cfg.compile else model
        self.t0, self.base_seconds = time.perf_counter(), self.pos.seconds
        self.report.start(self.total_steps, self.pos.step)
        if self.pos.step == 0 and self.initial_val is not None:
            self._record_start()
        self._train_epochs()
        # a run that stops mid-epoch (max_steps) is validated at its end too
        due = self.validate_fn is not None and self.pos.last_val_step != self.pos.step
        if due and self._validate():
            self._checkpoint(metric=self.selection.best)
        if self.report.meter.sums and self.pos.step != self.report.last_log_step:
            self._log()
        self._checkpoint()
        D.barrier()
        return self._finish()

    def _train_epochs(self) -> None:
        """Train until the last step or early stopping. SIGTERM / SIGUSR1 / SIGINT finish the step in
        progress, checkpoint it and raise TrainingInterrupted (mcip.engine.preempt)."""
        self.signals, self.stop_signal = StopSignals(), None
        try:
            with self.signals:
                while self.pos.epoch < self.n_epochs and not self._stopping():
                    if self._run_epoch():
                        self._end_epoch()
                if self.stop_signal is not None:
                    raise self._stopped()
        except KeyboardInterrupt:  # a second Ctrl-C (or one outside the main thread); after _stopped a no-op
            self._checkpoint(gather=False)
            raise
        finally:
            self.report.bar.close()
            close = getattr(self.data, "close", None)
            if close is not None:  # end the data loader's worker processes (kept across epochs)
                close()

    def _stopping(self) -> bool:
        return self.selection.stopped or self.pos.step >= self.total_steps or self._stop_requested()

    def _stop_requested(self) -> bool:
        """Whether a stop signal reached any rank (then ``stop_signal`` is its number). A collective
        under DDP: every rank calls it at the same points (after each optimizer step, between epochs)."""
        if self.stop_signal is None:
            numbers, received = self.signals.numbers, self.signals.received
            seen = D.any_rank(*(received == n for n in numbers), device=self.dist.device)
            self.stop_signal = next((n for n, hit in zip(numbers, seen, strict=True) if hit), None)
        return self.stop_signal is not None

    def _stopped(self) -> TrainingInterrupted:
        """Checkpoint the last finished step (every rank's RNG streams) and describe the stop."""
        self._checkpoint()
        D.barrier()
        path = self.ckpts.path_for(self.pos.step)
        return TrainingInterrupted(self.stop_signal, self.pos.step, self.total_steps, path, self.dist.rank)

    def _run_epoch(self) -> bool:
        """Train from ``pos.batch_in_epoch``; True when the epoch's batches are used up."""
        accum, start, n_real = self.cfg.grad_accum, self.pos.batch_in_epoch, 0
        batches: Iterable = self.data.iterate(self.pos.epoch, start) if start < self.usable else ()
        for index, batch in enumerate(batches, start=start):
            if index >= self.usable:
                break
            final = (index + 1) % accum == 0
            n_real += self._micro_batch(batch, final)
            if final:
                stepped, n_real = self._optimizer_step(n_real), 0
                self.pos.batch_in_epoch = index + 1
                if stepped:
                    self._after_step()
                if self._stopping():  # on a signal the epoch end (validation) waits for the resumed run
                    return self.pos.batch_in_epoch >= self.usable and self.stop_signal is None
        self.opt.zero_grad()
        return True

    def _micro_batch(self, batch: dict | None, final: bool) -> int:
        """Forward + backward of one micro-batch; 0 when it was skipped (on every rank)."""
        rows = self.skips.add(batch)
        tripped_here = self.skips.tripped()
        empty, tripped = D.any_rank(rows == 0, tripped_here, device=self.dist.device)
        if tripped:
            raise InputError(self.skips.message() if tripped_here else "Another rank's data is unreadable.")
        if empty:
            return 0
        batch = move_to(batch, self.dist.device)
        no_sync = self.ddp.no_sync() if self.ddp is not None and not final else nullcontext()
        with no_sync:
            with self.opt.autocast():
                out = self.model(batch)
            self.opt.backward(_loss_of(out) / self.cfg.grad_accum)
        self.synced = self.synced or final
        self.report.meter.add(out, rows)
        return 1

    def _optimizer_step(self, n_real: int) -> bool:
        if n_real == 0:
            self.opt.zero_grad()
            return False
        if self.ddp is not None and not self.synced:  # the window's last micro-batch was skipped
            for param in self.opt.params:
                if param.grad is not None:
                    param.grad.copy_(D.all_reduce_mean(param.grad))
        self.lrs = self.opt.lrs()
        self.report.meter.add(self.opt.step(grad_mult=self.cfg.grad_accum / n_real), 0)
        self.synced = False
        self.pos.step += 1
        return True

    def _after_step(self) -> None:
        step, cfg = self.pos.step, self.cfg
        self.report.bar.update()
        if step % cfg.log_every == 0:
            self._log()
        improved = cfg.val_every is not None and step % cfg.val_every == 0 and self._validate()
        if improved or (cfg.checkpoint_every is not None and step % cfg.checkpoint_every == 0):
            self._checkpoint(metric=self.selection.best if improved else None)

    def _end_epoch(self) -> None:
        due = self.validate_fn is not None and self.pos.last_val_step != self.pos.step
        improved = due and self._validate()
        self.pos.epoch, self.pos.batch_in_epoch = self.pos.epoch + 1, 0
        if improved:
            self._checkpoint(metric=self.selection.best)

    def _epoch(self) -> float:
        """Epochs trained so far, fractional (2.5 = half way through the third)."""
        return round(self.pos.epoch + self.pos.batch_in_epoch / self.usable, 4)

    def _log(self) -> None:
        self.report.train_record(self.pos.step, self._epoch(), self.lrs, self.skips)

    def _record_start(self) -> None:
        """The starting model's validation (measured before training) logged as step 0; with
        ``start_candidate`` also a candidate for the best checkpoint, so a run that never improves
        returns the model it started from."""
        self.pos.last_val_step = 0
        self.report.val_record(0, 0.0, self.initial_val)
        if self.start_candidate and self.selection.update(self.initial_val, 0):
            self._checkpoint(metric=self.selection.best)

    def _validate(self) -> bool:
        """Validate on rank 0, log ``val/...``; True when ``val_metric`` reached a new best."""
        self.pos.last_val_step = self.pos.step
        results = D.run_on_main(lambda: run_validation(self.validate_fn, self.task), self.dist)
        self.report.val_record(self.pos.step, self._epoch(), results)
        improved = self.selection.update(results, self.pos.step)
        if self.on_validate is not None and self.on_validate(self._epoch(), self.pos.step, results):
            self.selection.stopped = True  # the caller stops the run (e.g. a pruned search trial)
        return improved

    def _checkpoint(self, metric: float | None = None, gather: bool = True) -> None:
        """Save the run at the last finished step (``gather=False``: this rank's RNG only, no collective)."""
        if self.pos.step == self.last_ckpt_step and metric is None:
            return
        self.pos.seconds = self.base_seconds + time.perf_counter() - self.t0
        extra = {**asdict(self.pos), "selection": asdict(self.selection), "best_metric": self.selection.best}
        extra |= {"loop_config": asdict(self.cfg), "optim_config": asdict(self.optim_cfg)}
        extra["world_size"] = self.dist.world_size
        state = pack_training_state(self.task, self.opt, extra, {"skips": self.skips.state_dict()}, gather)
        if state is not None:
            self.ckpts.save(self.pos.step, state, metric)
        self.last_ckpt_step = self.pos.step

    def _finish(self) -> TrainResult:
        skipped, skipped_batches = self.skips.totals(self.dist.device)
        failures = [f for rank in D.all_gather_object(self.skips.failures) for f in rank]
        return self.report.finish(
            TrainResult(
                steps=self.pos.step,
                epochs_done=self.pos.epoch,
                seconds=self.base_seconds + time.perf_counter() - self.t0,
                best_metric=self.selection.best,
                best_step=self.selection.best_step,
                final_metrics={**self.report.last_train, **self.report.last_val},
                skipped=skipped,
                run_dir=self.run_dir,
                best_checkpoint=self.ckpts.best() if self.val_metric else None,
                last_checkpoint=self.ckpts.path_for(self.last_ckpt_step),
                skipped_batches=skipped_batches,
                first_failures=failures[: SkipCounter.KEEP_FAILURES],
                stopped_early=self.selection.stopped,
                val_metric=self.val_metric,
            )
        )
