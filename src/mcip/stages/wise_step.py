"""The pipelines' ``wise`` step: WiSE-FT between the pipeline's starting model and the previous stage's
output, alpha from ``wise.alpha`` (``auto``: chosen on the val split, :mod:`mcip.wise.curve`).

Writes ``OUT/NN-wise/model`` (the merged model; the next stage starts from it), ``config.yaml`` and
``wise_curve.json`` / ``.png``. It is checked when the pipeline starts (val data, ``select``), so a bad
setting fails before the first stage trains, not after it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mcip.engine.checkpoint import seed_everything
from mcip.engine.distributed import init_distributed, run_on_main
from mcip.engine.result import TrainResult
from mcip.errors import ConfigError
from mcip.models import IMAGE_PARTS, PARTS, load_model
from mcip.models.base import EmbeddingModel
from mcip.stages.config import TrainConfig, save_resolved
from mcip.stages.registry import STAGES, register_step
from mcip.wise.merge import WiseResult, wise_merge
from mcip.wise.select import check_guard_data, check_val


def frozen_parts(previous: TrainConfig) -> tuple[str, ...]:
    """The parts ``previous`` (the stage before ``wise``) never trains."""
    if STAGES.get(previous.stage).trains == "image":
        trained = IMAGE_PARTS
    elif previous.stage == "align":
        trained = tuple(previous.align_parts)
    else:  # realign: the text side and the logit scale/bias
        trained = tuple(p for p in PARTS if p not in IMAGE_PARTS)
    return tuple(p for p in PARTS if p not in trained)


def check_same_start(start: EmbeddingModel, finetuned: EmbeddingModel, previous: TrainConfig, spec: str):
    """The reloaded start must equal, bitwise, the parts of the fine-tuned model its stage kept frozen;
    otherwise ``spec`` builds (partly) random weights and WiSE-FT would average two unrelated models."""
    s, f = start.net.state_dict(), finetuned.net.state_dict()
    frozen = frozen_parts(previous)
    differ = [
        n
        for n in f
        if finetuned.part_of(n) in frozen and (n not in s or not s[n].to(f[n].device).equal(f[n]))
    ]
    if differ:
        raise ConfigError(
            f"The pipeline's starting model (model.spec={spec}) does not reload to the weights the "
            f"{previous.stage} stage started from: {len(differ)} tensor(s) it kept frozen differ (e.g. "
            f"{differ[0]}), so the spec builds (partly) random weights. Save it once (mcip save {spec} "
            "--out base) and set model.spec to that directory."
        )


register_step(
    "wise",
    description="WiSE-FT: the pipeline's start merged with the previous stage's output, alpha chosen on val",
)


class WiseStep:
    """One ``wise`` step of a pipeline. ``__init__`` checks it (called before the first stage trains);
    :meth:`run` merges (on rank 0 under DDP) and returns a :class:`TrainResult` for the pipeline."""

    def __init__(self, cfg: TrainConfig, first: TrainConfig, previous: TrainConfig, split: tuple) -> None:
        """``first``: the pipeline's first stage (its model is the start); ``previous``: the stage
        before this step; ``split``: ``(train, val, seen)`` as the stages compute it."""
        train, val, seen = split
        self.first, self.previous, self.val = first, previous, list(val)
        self.gallery = list(train) if seen else None  # seen-class validation, as the stages do
        start, w = first.model, cfg.wise
        if w.alpha == "auto" or self.val:
            check_val(self.val, w.select if w.alpha == "auto" else "i2i", text=not start.drop_projector)
        if w.alpha == "auto":
            check_guard_data(w.select, w.guard, bool(w.names))

    def run(self, cfg: TrainConfig, progress: bool = True) -> TrainResult:
        """Merge ``cfg.model.spec`` (the previous stage's model) with the start into ``cfg.out/model``."""
        dist = init_distributed()
        return run_on_main(lambda: self._run(cfg, str(dist.device), progress), dist)

    def _run(self, cfg: TrainConfig, device: str, progress: bool) -> TrainResult:
        began, run_dir, w = time.perf_counter(), Path(cfg.out), cfg.wise
        save_resolved(cfg, run_dir / "config.yaml")
        s = self.first.model
        seed_everything(self.first.loop.seed)  # as run_stage: a spec with random parts rebuilds the same
        start = load_model(s.spec, device=device, drop_projector=s.drop_projector, **s.kwargs)
        finetuned = load_model(cfg.model.spec, device=device)
        check_same_start(start, finetuned, self.previous, s.spec)
        extra = {"stage": "wise", "config": json.loads(json.dumps(cfg.to_dict(), default=str))}
        result = wise_merge(
            start, finetuned, run_dir / "model", w.alpha, self.val or None, w.grid, w.select, w.parts,
            w.names, batch_size=w.batch_size, curve_dir=run_dir, extra=extra, gallery=self.gallery,
            tolerance=w.tolerance, guard=w.guard,
        )  # fmt: skip
        if progress:
            print(summary_line(result))
        return _as_train_result(result, run_dir, time.perf_counter() - began)


def summary_line(result: WiseResult) -> str:
    parts = ", ".join(result.parts) or "none (the models are equal)"
    if result.curve is None:
        return f"wise: alpha {result.alpha:g} (given) over {parts}"
    return f"wise: alpha {result.alpha:g} over {parts}; {result.curve.reason}"


def _as_train_result(result: WiseResult, run_dir: Path, seconds: float) -> TrainResult:
    curve = result.curve
    chosen = curve.at(result.alpha) if curve is not None else None
    final = {"alpha": result.alpha, **{f"val/{k}": v for k, v in (chosen or {}).items() if k != "alpha"}}
    return TrainResult(
        steps=0,
        epochs_done=0,
        seconds=seconds,
        best_metric=chosen[curve.metric] if chosen else None,
        best_step=None,
        final_metrics=final,
        skipped=0,
        run_dir=run_dir,
        best_checkpoint=None,
        last_checkpoint=None,
        val_metric=curve.metric if curve is not None else None,
    )
