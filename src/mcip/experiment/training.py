"""How the runner trains its rows: one stage of a row (a shipped config with the run's typed values, run
once and continued when interrupted), the rows' models kept by method, and the WiSE-FT merge of the
guarded row. :class:`RowTraining` is the part of :class:`mcip.experiment.runner.Runner` that does it; a
source changes a row through its hooks here (:meth:`RowTraining.train_stage`,
:meth:`RowTraining.train_values`, :meth:`RowTraining.mcip_values`, :meth:`RowTraining.realign_overrides`,
:meth:`RowTraining.val_zeroshot`), never by replacing a row's function."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mcip.experiment.rows import LOG, ROWS, ModelRef, Row
from mcip.losses.mcip import convex_weights


def digest(*parts: object) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=8).hexdigest()


def model_done(model_dir: Path) -> bool:
    from mcip.models.checkpoint import META_FILE

    return (Path(model_dir) / META_FILE).is_file()


def stage_config(
    name: str,
    stage: str,
    values: Mapping[str, Any],
    model_kwargs: dict | None = None,
    overrides: Sequence[str] = (),
):
    """The shipped config (or YAML file) ``name`` resolved for one of its stages, with typed ``values``
    (dotted keys, e.g. ``{"loss.mc_weight": 0.25}``: no round trip through text) and a user's ``--set``
    style ``overrides`` on top (and the backend options ``model_kwargs`` replacing the file's, when given)."""
    from mcip.stages.resolve import load_config, resolve_stage

    raw = load_config(name, list(overrides), dict(values))
    raw.pop("pipeline", None)
    raw.pop("stage", None)
    if model_kwargs is not None:
        raw.setdefault("model", {})["kwargs"] = model_kwargs
    return resolve_stage(raw, stage)


def run_stage_once(cfg, log: LOG, what: str, progress: bool) -> Path:
    """Run one stage unless its model exists; continue an interrupted one from its last checkpoint."""
    from mcip.stages.run import run_stage

    model_dir = Path(cfg.out) / "model"
    if model_done(model_dir):
        log(f"  {what}: done earlier ({model_dir})")
        return model_dir
    log(f"  {what}: training ({cfg.stage}, {cfg.loop.epochs} epoch(s), out {cfg.out})")
    result = run_stage(cfg, resume=(Path(cfg.out) / "checkpoints").is_dir(), progress=progress)
    r = result.train
    log(f"  {what}: {r.steps} steps in {r.seconds:.0f} s, best val {r.val_metric} = {r.best_metric}")
    return result.model_dir


class RowTraining:
    """The runner's training of the rows (a part of :class:`mcip.experiment.runner.Runner`, which holds
    ``s`` (the settings), ``data``, ``out``, ``cache``, ``configs``, ``log``, ``progress`` and ``gallery``)."""

    def start_rows(self, base: ModelRef, captions: Path) -> None:
        """The base model and the pseudo-captions every row starts from; forget models made before."""
        self.base, self.captions_file, self.made = base, captions, {"baseline": base}

    def stages(self, base: ModelRef, captions: Path) -> dict[str, ModelRef]:
        """Train every row of :meth:`rows` (each reuses the models of the rows it builds on)."""
        self.start_rows(base, captions)
        return {row.name: self.model_of(row.method) for row in self.rows()}

    def row_table(self) -> dict[str, Row]:
        """Every row whose model may be asked for, by method: the table's, this run's own on top."""
        return {row.method: row for row in (*ROWS, *self.rows())}

    def model_of(self, method: str) -> ModelRef:
        """The model of the row ``method``: made by its ``make`` the first time, then reused."""
        if method not in self.made:
            self.made[method] = self.row_table()[method].make(self)
        return self.made[method]

    def common(self) -> dict[str, Any]:
        """Typed overrides of every stage (dotted keys)."""
        s = self.s
        values: dict[str, Any] = {
            "data.batch_size": s.batch_size,
            "data.num_workers": s.num_workers,
            "data.val": str(self.data["val"]),
            "cache_dir": str(self.cache),
        }
        if s.max_steps:
            values["loop.max_steps"] = s.max_steps
        return values

    reuse_runs = True  # a stage that would repeat a finished run (same_as) takes its model (reuse.py)

    def stage_model(
        self,
        pipeline: str,
        stage: str,
        spec: ModelRef,
        out: str,
        extra: Mapping[str, Any],
        same_as: str | None = None,
    ) -> Path:
        """Train one stage of a row from ``spec`` into ``OUT/runs/<out>`` with the run's values and
        ``extra`` (Re-A: its config's batch, until val stops improving); returns the model folder.
        ``same_as``: a finished run of this run (``OUT/runs/<same_as>``) whose model this stage's would
        be, when its records show it (:mod:`mcip.experiment.reuse`): then that model is taken."""
        s = self.s
        values = self.common()
        if stage == "realign":  # its batch is the config's; it runs until val stops improving
            values = {k: v for k, v in values.items() if k not in ("loop.max_steps", "data.batch_size")}
            values |= {"loop.epochs": s.realign_epochs, "loop.early_stopping_patience": s.realign_patience}
            values |= self.realign_overrides()
        else:
            values["loop.epochs"] = s.stage_epochs
        values |= {"model.spec": str(spec), "out": str(self.out / "runs" / out), **extra}
        if same_as is not None and self.reuse_runs:
            reused = self.reuse_stage(pipeline, stage, out, values, same_as)
            if reused is not None:
                return reused
        return self.train_stage(pipeline, stage, out, values)

    def reuse_stage(
        self, pipeline: str, stage: str, out: str, values: dict[str, Any], same_as: str
    ) -> Path | None:
        """The model of the finished run ``OUT/runs/<same_as>`` as this stage's, when its records show
        that this stage would end with it (:func:`mcip.experiment.reuse.reuse_reason`); else None."""
        from mcip.experiment.reuse import reuse_reason, reused_run

        cfg = stage_config(self.configs[pipeline], stage, values, overrides=self.s.stage_overrides)
        model_dir = Path(cfg.out) / "model"
        if model_done(model_dir):
            return None  # train_stage reports it done
        reason, facts = reuse_reason(cfg, self.out / "runs" / same_as)
        if reason is None:
            self.log(f"  {out}: trained ({facts.get('why_not')}, so not the model of {same_as})")
            return None
        self.log(f"  {out}: {reason}")
        return reused_run(cfg, self.out / "runs" / same_as, reason, facts)

    def train_stage(self, pipeline: str, stage: str, out: str, values: dict[str, Any]) -> Path:
        """Train one stage of a row with typed ``values`` (the user's ``--set`` still wins); a source may
        choose settings first (``mcip fit`` searches them on val)."""
        cfg = stage_config(self.configs[pipeline], stage, values, overrides=self.s.stage_overrides)
        return run_stage_once(cfg, self.log, out, self.progress)

    def realign_overrides(self) -> dict[str, Any]:
        """Extra typed overrides of the Re-A stages (the source's)."""
        return {}

    def train_values(self) -> dict[str, Any]:
        """The training images with their captions (GPR-FT and Re-A)."""
        return {"data.train": str(self.data["train"])}

    def mcip_values(self) -> dict[str, Any]:
        """MCIP's data and loss weights (a weight left None is the config's, or the recipe's)."""
        s = self.s
        values: dict[str, Any] = {
            "data.train": str(self.data["train_no_captions"]),
            "data.captions": str(self.captions_file),
        }
        if s.hard_caption_weight is not None:
            values["loss.hard_caption_weight"] = s.hard_caption_weight
        if s.mc_weight is not None:
            values |= {f"loss.{k}": v for k, v in convex_weights(s.mc_weight).items()}
        return values

    def val_zeroshot(self) -> tuple[dict[str, str] | None, tuple[str, ...]]:
        """(label -> class name of the val images, prompt templates) for val zero-shot top-1 on the
        guard's WiSE-FT curve, so the curve shows zero-shot next to I2I and T2I (the guard still selects
        on ``combined``; ``select="guarded"`` is what would use it); (None, ()) when the source has no
        class names (the curve then has no zero-shot column)."""
        return None, ()

    def wise(self, finetuned: Path, out: str) -> Path:
        """WiSE-FT of the base and ``finetuned`` at the alpha of :attr:`RunSettings.wise_grid` that
        :attr:`RunSettings.guard_select` picks on val (``mcip merge --alpha auto --select ...``; the curve
        is written next to the model)."""
        from mcip.data import load_records
        from mcip.wise.curve import DEFAULT_TEMPLATES
        from mcip.wise.merge import wise_merge

        folder = self.out / "runs" / out
        if model_done(folder / "model"):
            self.log(f"  {out}: done earlier ({folder / 'model'})")
            return folder / "model"
        self.log(f"  {out}: WiSE-FT of the base and {Path(finetuned).parent.name}, alpha chosen on val")
        names, templates = self.val_zeroshot()  # val zero-shot on the curve: the trade-off made visible
        result = wise_merge(
            self.base,
            finetuned,
            folder / "model",
            alpha="auto",
            val=load_records(self.data["val"]),
            grid=self.s.wise_grid,
            select=self.s.guard_select,
            guard=self.s.guard_sides,
            names=names,
            templates=templates or DEFAULT_TEMPLATES,
            curve_dir=folder,
            progress=False,
            gallery=self.gallery,
            cache_dir=self.cache,
        )
        chosen = result.curve.at(result.alpha) if result.curve else None
        shown = ", ".join(
            f"{k} {v:.1f}" for k, v in (chosen or {}).items() if k in ("i2i_map", "t2i_r5", "zeroshot_top1")
        )
        self.log(f"  {out}: alpha {result.alpha:g} ({shown} on val)")
        return result.model_dir

    def wise_curve_points(self) -> list[dict] | None:
        """The guarded row's WiSE-FT curve on val, each point marked ``chosen`` or not (for the teaser)."""
        path = self.out / "runs" / "guard-wise" / "wise_curve.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return [dict(p, chosen=p["alpha"] == data["chosen_alpha"]) for p in data["curve"]]
