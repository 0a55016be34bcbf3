"""The recipe search of ``mcip fit``: each stage's settings chosen on the val split with Optuna.

A *study* searches one stage (``gpr`` or ``mcip`` for the image tower, ``realign`` for Re-A). A *trial*
trains that stage once with the trial's settings for at most ``max_epochs`` epochs, validating after each
epoch: the stage's own early stopping ends it after ``patience`` validations without a new best, and the
pruner (successive halving, fed every epoch's val metric) ends it sooner when it trails the trials before
it at the same epoch. The trial's value is its best val metric (the stage's selection metric: val I2I mAP
for the image stages, val T2I R@5 for Re-A); the best trial's model is the row's model, so nothing is
trained twice.

What is searched (:class:`SearchSpace`):

- ``quick`` (the default on a CPU): the learning rates of :data:`LR_GRID` (Re-A: :data:`REALIGN_LR_GRID`)
  in that order, each a trial; for MCIP with a caption pool, one more trial at the best rate with the
  other caption policy (:mod:`mcip.experiment.fit.captions`).
- ``full`` (the default with a GPU): the same grid first, then TPE samples the rate (log-uniform in
  :data:`LR_RANGE`) and, for MCIP, the caption policy, ``mc_weight`` and ``hard_caption_weight``.
- A value the user gave (``--lr``, ``--mc-weight``, ...) is fixed: that dimension is not searched.

The studies live in ``OUT/search/search.db`` (SQLite): a stopped search continues where it stopped (a
trial that was running is run again). Each finished trial keeps its model only while it is the best of its
study; checkpoints are deleted as trials end.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcip.errors import ConfigError
from mcip.experiment.fit.search_report import fmt_value as _fmt
from mcip.experiment.fit.search_report import write_search_report

SEARCH_MODES = ("auto", "quick", "full", "off")
LR_RANGE = (1e-6, 1e-3)
LR_GRID = (1e-4, 3e-4, 3e-5, 1e-5)  # the likeliest first: the pruner never stops a study's first trial
REALIGN_LR_GRID = (1e-4, 1e-5)
MC_WEIGHTS = (0.1, 0.25, 0.5)
HARD_CAPTION_WEIGHTS = (0.0, 0.1)
QUICK = {"max_epochs": 6, "patience": 2, "min_resource": 1, "extra_trials": 0}
FULL = {"max_epochs": 10, "patience": 3, "min_resource": 2, "extra_trials": 8}
LOG = Callable[[str], None]


def resolve_mode(mode: str) -> str:
    """``auto`` -> ``full`` where CUDA is available, else ``quick``."""
    if mode not in SEARCH_MODES:
        raise ConfigError(f"--search must be one of {', '.join(SEARCH_MODES)}, got {mode!r}.")
    if mode != "auto":
        return mode
    import torch

    return "full" if torch.cuda.is_available() else "quick"


@dataclass(frozen=True)
class SearchSpace:
    """What one study varies. A dimension with one value (or ``lr`` None) is fixed, not searched.

    ``lr``: the fixed rate, or None to search (grid first, then log-uniform in :data:`LR_RANGE` in full
    mode); ``caption_policies`` / ``mc_weights`` / ``hard_caption_weights``: the first value is the
    default (the grid's), the others are tried by the quick mode's extra trial (policies only) or sampled
    by TPE (full mode)."""

    stage: str
    lr: float | None = None
    lr_grid: tuple[float, ...] = LR_GRID
    caption_policies: tuple[str, ...] = ()
    mc_weights: tuple[float, ...] = ()
    hard_caption_weights: tuple[float, ...] = ()

    def defaults(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, values in self._categorical().items():
            out[key] = values[0]
        return out

    def _categorical(self) -> dict[str, tuple]:
        dims = {
            "caption_policy": self.caption_policies,
            "mc_weight": self.mc_weights,
            "hard_caption_weight": self.hard_caption_weights,
        }
        return {k: v for k, v in dims.items() if v}

    def grid(self) -> list[dict[str, Any]]:
        """The trials enqueued first: each grid rate with the default of every other dimension."""
        base = self.defaults()
        rates = [self.lr] if self.lr is not None else list(self.lr_grid)
        return [{**({"lr": lr} if self.lr is None else {}), **base} for lr in rates]

    def suggest(self, trial) -> dict[str, Any]:
        """The trial's settings (enqueued values come back as they were enqueued)."""
        params: dict[str, Any] = {"lr": self.lr}
        if self.lr is None:
            params["lr"] = trial.suggest_float("lr", *LR_RANGE, log=True)
        for key, values in self._categorical().items():
            params[key] = trial.suggest_categorical(key, list(values)) if len(values) > 1 else values[0]
        return params


@dataclass
class TrialRecord:
    """One trial as the report shows it."""

    study: str
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING
    params: dict[str, Any]
    value: float | None  # best val metric
    metric: str
    val: dict[str, float] = field(default_factory=dict)  # all val results at the best epoch
    epochs: float | None = None
    best_epoch: float | None = None
    seconds: float | None = None
    chosen: bool = False


@dataclass
class StudyResult:
    stage: str
    metric: str
    best_params: dict[str, Any]
    best_value: float | None
    model_dir: Path | None  # the best trial's model (reused as the row's model)
    trials: list[TrialRecord]


# (settings, trial folder, on_validate) -> (TrainResult, model folder); raises nothing for a pruned run
TrainTrial = Callable[[dict[str, Any], Path, Callable], tuple[Any, Path]]


def _optuna():
    import optuna  # a core dependency: the default mcip fit searches

    return optuna


class RecipeSearch:
    """The studies of one ``mcip fit`` run, in ``folder`` (``OUT/search``)."""

    def __init__(
        self,
        folder: Path,
        mode: str,
        trials: int | None = None,
        budget_seconds: float | None = None,
        seed: int = 0,
        log: LOG = print,
    ) -> None:
        self.folder, self.mode = Path(folder), resolve_mode(mode)
        if self.mode == "off":
            raise ConfigError("RecipeSearch needs a search mode other than 'off'.")
        if trials is not None and trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {trials}.")
        if budget_seconds is not None and not budget_seconds > 0:
            raise ConfigError(f"--budget-min must be > 0, got {budget_seconds / 60:g}.")
        self.trials, self.seed, self.log = trials, seed, log
        self.deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
        self.settings = QUICK if self.mode == "quick" else FULL
        self.folder.mkdir(parents=True, exist_ok=True)
        self.storage = f"sqlite:///{(self.folder / 'search.db').resolve()}"
        self.results: dict[str, StudyResult] = {}

    # ------------------------------------------------------------------ one study
    def run(self, space: SearchSpace, metric: str, train_trial: TrainTrial) -> StudyResult:
        """Run (or continue) the study of ``space.stage``; returns its best settings and model."""
        optuna = _optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=self.settings["min_resource"], reduction_factor=2
        )
        grid = space.grid()
        sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=len(grid))
        study = optuna.create_study(
            study_name=space.stage,
            storage=self.storage,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        self._fail_stale(study)
        planned = self._planned(space, grid)
        objective = self._objective(space, metric, train_trial)
        for params in planned:  # queued in order; skip_if_exists: a resumed study does not redo them
            study.enqueue_trial(params, skip_if_exists=True)
        total = len(planned) + self._extra(space)
        finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
        if finished >= total:
            self.log(f"  search {space.stage}: done earlier ({finished} trials in {self.folder})")
        self._optimize(study, objective, total)
        if self.mode == "quick" and len(space.caption_policies) > 1:  # the other caption policy, best rate
            best = self._best(study)
            if best is not None:
                for policy in space.caption_policies[1:]:
                    study.enqueue_trial({**_params(best), "caption_policy": policy}, skip_if_exists=True)
                self._optimize(study, objective, total + len(space.caption_policies) - 1)
        result = self._result(study, space, metric)
        self.results[space.stage] = result
        self._cleanup(result)
        return result

    def _planned(self, space: SearchSpace, grid: list[dict]) -> list[dict]:
        return grid if self.trials is None else grid[: self.trials]

    def _extra(self, space: SearchSpace) -> int:
        """TPE's trials after the grid: full mode only, and only when something is searched."""
        searched = space.lr is None or any(len(v) > 1 for v in space._categorical().values())
        if self.mode != "full" or not searched:
            return 0
        if self.trials is not None:
            return max(0, self.trials - len(space.grid()))
        return self.settings["extra_trials"]

    def _optimize(self, study, objective, total: int) -> None:
        """Run trials until the study holds ``total`` finished (complete or pruned) ones, or the budget
        is spent (a trial that has started always finishes)."""
        finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
        n = total - finished
        if n <= 0:
            return
        timeout = None if self.deadline is None else self.deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            if any(t.state.name == "COMPLETE" for t in study.trials):
                self.log(f"  search {study.study_name}: the time budget is spent; no more trials")
                return
            self.log(f"  search {study.study_name}: the time budget is spent; one trial (the grid's first)")
            n, timeout = 1, None  # a row needs a model: train the first planned settings
        study.optimize(objective, n_trials=n, timeout=timeout, catch=())

    @staticmethod
    def _fail_stale(study) -> None:
        """A trial left RUNNING by a stopped run can never finish: mark it failed and queue its settings
        again, so the continued search trains it from the start."""
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            params = _params(t)
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            if params:
                study.enqueue_trial(params, skip_if_exists=False)

    def _objective(self, space: SearchSpace, metric: str, train_trial: TrainTrial):
        optuna = _optuna()

        def objective(trial) -> float:
            params = space.suggest(trial)
            folder = self.folder / space.stage / f"trial-{trial.number:03d}"
            if folder.exists():
                shutil.rmtree(folder)
            seen: dict[int, dict[str, float]] = {}
            pruned = {"at": None}

            def on_validate(epoch: float, step: int, results: dict[str, float]) -> bool:
                seen[step] = dict(results)
                rung = round(epoch)
                value = results.get(metric)
                if value is None or math.isnan(value) or rung < 1:
                    return False
                trial.report(value, rung)
                if trial.should_prune():
                    pruned["at"] = epoch
                    return True
                return False

            shown = ", ".join(f"{k} {_fmt(v)}" for k, v in params.items())
            self.log(f"  search {space.stage}: trial {trial.number} ({shown})")
            start = time.perf_counter()
            result, model_dir = train_trial(params, folder, on_validate)
            seconds = time.perf_counter() - start
            best_val = seen.get(result.best_step, {}) if result.best_step is not None else {}
            attrs = {
                "model_dir": str(model_dir),
                "seconds": round(seconds, 1),
                "epochs": result.epochs_done,
                "best_step": result.best_step,
                "steps_per_epoch": _steps_per_epoch(result),
                "val": best_val,
            }
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            value = result.best_metric
            if pruned["at"] is not None:
                self.log(
                    f"  search {space.stage}: trial {trial.number} pruned after epoch {pruned['at']:g} "
                    f"({metric} {_fmt(value)}, {seconds:.0f} s)"
                )
                shutil.rmtree(folder, ignore_errors=True)
                raise optuna.TrialPruned()
            if value is None or math.isnan(value):
                raise ConfigError(f"Trial {trial.number} of {space.stage} produced no val {metric}.")
            self.log(
                f"  search {space.stage}: trial {trial.number} {metric} {value:.2f} "
                f"({result.epochs_done} epochs, {seconds:.0f} s)"
            )
            return float(value)

        return objective

    @staticmethod
    def _best(study):
        from optuna.trial import TrialState

        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return max(done, key=lambda t: (t.value, -t.number)) if done else None

    def _result(self, study, space: SearchSpace, metric: str) -> StudyResult:
        best = self._best(study)
        records = []
        for t in study.trials:
            if t.state.name == "WAITING":
                continue
            attrs = t.user_attrs
            steps = attrs.get("steps_per_epoch")
            best_step = attrs.get("best_step")
            records.append(
                TrialRecord(
                    study=space.stage,
                    number=t.number,
                    state=t.state.name,
                    params={**space.defaults(), **({"lr": space.lr} if space.lr else {}), **_params(t)},
                    value=t.value if t.value is not None else _last(t),
                    metric=metric,
                    val=attrs.get("val", {}),
                    epochs=attrs.get("epochs"),
                    best_epoch=(best_step / steps) if best_step is not None and steps else None,
                    seconds=attrs.get("seconds"),
                    chosen=best is not None and t.number == best.number,
                )
            )
        if best is None:
            raise ConfigError(
                f"The {space.stage} search finished no trial (budget too small, or every trial failed); "
                "raise --budget-min or pass the settings yourself (e.g. --lr 1e-4)."
            )
        params = {**space.defaults(), **({"lr": space.lr} if space.lr is not None else {}), **_params(best)}
        model_dir = Path(best.user_attrs.get("model_dir", ""))
        if not (model_dir / "mcip_model.json").is_file() and not model_dir.is_dir():
            raise ConfigError(
                f"The chosen {space.stage} trial's model ({model_dir}) is gone; delete {self.folder} to search "
                "again."
            )
        return StudyResult(space.stage, metric, params, best.value, model_dir, records)

    def _cleanup(self, result: StudyResult) -> None:
        """Keep the best trial's model only."""
        folder = self.folder / result.stage
        for trial_dir in sorted(folder.glob("trial-*")):
            if result.model_dir is None or trial_dir != result.model_dir.parent:
                shutil.rmtree(trial_dir, ignore_errors=True)

    # ------------------------------------------------------------------ report
    def records(self) -> list[TrialRecord]:
        return [r for s in self.results.values() for r in s.trials]

    def write_report(self, out: Path) -> dict[str, Path]:
        """``recipe.md``, ``recipe.json`` and ``recipe.png`` in ``out`` (:mod:`mcip.experiment.fit.search_report`)."""
        return write_search_report(self, out)


def _params(trial) -> dict[str, Any]:
    """A trial's settings; an enqueued trial stopped before its first suggestion has them only as fixed."""
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


def _steps_per_epoch(result) -> float | None:
    return result.steps / result.epochs_done if result.epochs_done else None


def _last(trial) -> float | None:
    values = trial.intermediate_values
    return max(values.values()) if values else None
