"""One runner for the whole experiment, with two data sources: the offline lab (``mcip lab run``) and a
user's own manifests (``mcip fit``).

A run goes through the same steps for both (each skipped when its output exists, so an interrupted run
continues; a folder made with other settings is refused):

1. data: per-split manifests under ``OUT/data`` (the source decides how);
2. base model: the model every row starts from (the lab aligns one; ``mcip fit`` takes the user's);
3. pseudo-captions for MCIP (the source decides: the lab retrieves from its train captions; ``mcip fit``
   writes class-name templates and, with a pool, retrieval from it, merged);
4. the rows (:data:`ROWS`): GPR-FT, 2SFT, MCIP, MCIP+Re-A and the guarded row, each reusing the models of
   the rows it builds on; every choice (checkpoints, WiSE-FT alpha, when Re-A stops) on the val split;
5. evaluation of every row on the val split, which chooses the recommended row (``OUT/results/val``);
6. evaluation of every row on the test split, read once after every choice, and the report (``OUT/results``: ``table1.md``,
   ``results.json``, ``table1.csv``, ``teaser.png``, ``reading.md``, ``run.json``);
7. search: the test images indexed with the recommended row (``OUT/index``), and a few example queries.

A source is a subclass of :class:`Runner` that fills in :meth:`Runner.prepare_data`,
:meth:`Runner.base_model`, :meth:`Runner.captions`, :meth:`Runner.benchmark_specs`,
:meth:`Runner.demo_queries` and :meth:`Runner.write_reading`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mcip.errors import ConfigError
from mcip.experiment.rows import (  # the rows and settings live in mcip.experiment.rows; re-exported here
    GUARD_SELECTS,  # noqa: F401
    GUARD_SIDES,  # noqa: F401
    GUARDED,  # noqa: F401
    LOG,
    METHODS,  # noqa: F401
    ROWS,  # noqa: F401
    ModelRef,
    Row,
    RunSettings,
    select_rows,
)


def averages_of(report, columns) -> float:
    """A report's AVG over the table's columns (-inf when nothing was measured)."""
    from mcip.eval.report import averages, group_columns

    value = averages(report, group_columns([(n, f) for n, f, _ in columns]))["AVG"][0]
    return float("-inf") if value is None else value


@dataclass
class RunResult:
    out: Path
    models: dict[str, ModelRef]  # row -> mcip model directory (or the starting model's spec)
    files: dict[str, Path]  # report files
    table: str  # Markdown
    reading: str
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    search: str = ""  # the search demo (Markdown)
    recommended: str = ""  # the row whose model was indexed


def markdown_table_of(reports, columns) -> str:
    from mcip.eval.report import markdown_table

    return markdown_table(reports, [(n, f) for n, f, _ in columns])


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
    from mcip.train.config import load_config, resolve_stage

    raw = load_config(name, list(overrides), dict(values))
    raw.pop("pipeline", None)
    raw.pop("stage", None)
    if model_kwargs is not None:
        raw.setdefault("model", {})["kwargs"] = model_kwargs
    return resolve_stage(raw, stage)


def run_stage_once(cfg, log: LOG, what: str, progress: bool) -> Path:
    """Run one stage unless its model exists; continue an interrupted one from its last checkpoint."""
    from mcip.train.run import run_stage

    model_dir = Path(cfg.out) / "model"
    if model_done(model_dir):
        log(f"  {what}: done earlier ({model_dir})")
        return model_dir
    log(f"  {what}: training ({cfg.stage}, {cfg.loop.epochs} epoch(s), out {cfg.out})")
    result = run_stage(cfg, resume=(Path(cfg.out) / "checkpoints").is_dir(), progress=progress)
    r = result.train
    log(f"  {what}: {r.steps} steps in {r.seconds:.0f} s, best val {r.val_metric} = {r.best_metric}")
    return result.model_dir


class Runner:
    """One run of the experiment (see the module docstring); ``run()`` returns a :class:`RunResult`.

    Subclasses are the data sources. ``self.data`` (from :meth:`prepare_data`) holds the paths ``train``
    (with captions, for Re-A), ``train_no_captions`` (MCIP trains on the pseudo-captions only), ``val``,
    ``test``, ``root`` (the folder the benchmarks read) and a one-line ``summary``.
    """

    command = "mcip run"
    settings_file = "run-settings.json"
    configs: ClassVar[dict[str, str]] = {
        "2sft": "lab-2sft",
        "mcip+rea": "lab-mcip+rea",
    }  # pipeline -> shipped config of its stages
    method = "both"

    def __init__(
        self,
        out: Path,
        settings: RunSettings,
        force: bool = False,
        progress: bool = True,
        log: LOG = print,
        cache: Path | None = None,
    ) -> None:
        self.out, self.s = Path(out), settings.validate()
        self.force, self.progress, self.log = force, progress, log
        self.cache = Path(cache) if cache else self.out / "cache"
        self.steps: dict[str, float] = {}
        self.gallery = None  # seen-class validation: train records the val images query (WiSE-FT)

    # ------------------------------------------------------------------ what a source provides
    def prepare_data(self) -> dict:
        raise NotImplementedError

    def base_model(self) -> ModelRef:
        raise NotImplementedError

    def captions(self, base: ModelRef) -> Path:
        raise NotImplementedError

    def benchmark_specs(self, split: str = "test") -> list[str]:
        """The ``mcip eval`` benchmark specs of ``split`` (``val`` or ``test``; read from
        ``self.data['root']``)."""
        raise NotImplementedError

    def demo_queries(self, index) -> list[tuple[str, str, str]]:
        """(kind ``text``/``image``, query, how to show it) for the search demo."""
        raise NotImplementedError

    def write_reading(self, reports, pairs: list[tuple[str, str]], val_reports, recommended: str) -> str:
        """The plain-words reading of the test ``reports``; ``val_reports`` (same rows) chose
        ``recommended``."""
        raise NotImplementedError

    def extra_files(self) -> dict[str, Path]:
        """Report files a source writes besides the table (``mcip fit``: the recipe search's)."""
        return {}

    def val_zeroshot(self) -> tuple[dict[str, str] | None, tuple[str, ...]]:
        """(label -> class name of the val images, prompt templates) for val zero-shot top-1 on the
        guard's WiSE-FT curve, so the curve shows zero-shot next to I2I and T2I (the guard still selects
        on ``combined``; ``select="guarded"`` is what would use it); (None, ()) when the source has no
        class names (the curve then has no zero-shot column)."""
        return None, ()

    demo_column = "label"

    def demo_label(self, hit) -> str:
        """What the search demo shows of a hit."""
        return str(hit.metadata.get("label", ""))

    def rows(self) -> list[Row]:
        return select_rows(self.s.all_rows, self.method)

    def settings_record(self) -> dict:
        """What must match for an existing ``out`` to be continued (JSON-able)."""
        return json.loads(json.dumps(dataclasses.asdict(self.s)))

    # ------------------------------------------------------------------ helpers
    def _timed(self, name: str, fn: Callable[[], object]):
        start = time.perf_counter()
        value = fn()
        self.steps[name] = round(time.perf_counter() - start, 1)
        return value

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

    # ------------------------------------------------------------------ the rows
    def stages(self, base: ModelRef, captions: Path) -> dict[str, ModelRef]:
        """Train every row of :meth:`rows` (each reuses the models of the rows it builds on)."""
        self.base, self.captions_file, self.made = base, captions, {"baseline": base}
        return {row.name: self._model(row.method) for row in self.rows()}

    def _model(self, method: str) -> ModelRef:
        if method not in self.made:
            self.made[method] = getattr(self, f"row_{method}")()
        return self.made[method]

    def _stage(self, pipeline: str, stage: str, spec: ModelRef, out: str, extra: Mapping[str, Any]) -> Path:
        s = self.s
        values = self.common()
        if stage == "realign":  # its batch is the config's; it runs until val stops improving
            values = {k: v for k, v in values.items() if k not in ("loop.max_steps", "data.batch_size")}
            values |= {"loop.epochs": s.realign_epochs, "loop.early_stopping_patience": s.realign_patience}
            values |= self.realign_overrides()
        else:
            values["loop.epochs"] = s.stage_epochs
        values |= {"model.spec": str(spec), "out": str(self.out / "runs" / out), **extra}
        return self.train_stage(pipeline, stage, out, values)

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
            values |= {"loss.mc_weight": s.mc_weight, "loss.arc_weight": 1 - s.mc_weight}
        return values

    def row_baseline(self) -> ModelRef:
        return self.base

    def row_gpr_no_proj(self) -> Path:
        extra = {**self.train_values(), "model.drop_projector": True}
        return self._stage("2sft", "gpr", self.base, "gpr-no-proj", extra)

    def row_gpr(self) -> Path:
        return self._stage("2sft", "gpr", self.base, "gpr", self.train_values())

    def row_sft(self) -> Path:
        return self._stage("2sft", "realign", self._model("gpr"), "2sft", self.train_values())

    def row_mcip(self) -> Path:
        return self._stage("mcip+rea", "mcip", self.base, "mcip", self.mcip_values())

    def row_mcip_rea(self) -> Path:
        return self._stage("mcip+rea", "realign", self._model("mcip"), "mcip-rea", self.train_values())

    def row_guarded(self) -> Path:
        """An MCIP stage (selected on val I2I, the paper's choice): the MCIP row's model, or with
        :attr:`RunSettings.guard_distill_weight` > 0 one trained with that drift regulariser
        (``loss.distill_weight``); merged with the base by WiSE-FT at the alpha
        :attr:`RunSettings.guard_select` picks on val, then Re-A selected on ``combined``. (Selecting the
        MCIP stage itself on ``combined`` keeps the start: the text loss it sees is what WiSE-FT and Re-A
        recover afterwards.)"""
        weight = self.s.guard_distill_weight
        if weight > 0:
            values = {**self.mcip_values(), "loss.distill_weight": weight}
            mcip = self._stage("mcip+rea", "mcip", self.base, "guard-mcip", values)
        else:
            mcip = self._model("mcip")
        merged = self.wise(mcip, "guard-wise")
        extra = {**self.train_values(), "loop.select": "combined"}
        return self._stage("mcip+rea", "realign", merged, "guard-rea", extra)

    def wise(self, finetuned: Path, out: str) -> Path:
        """WiSE-FT of the base and ``finetuned`` at the alpha of :attr:`RunSettings.wise_grid` that
        :attr:`RunSettings.guard_select` picks on val (``mcip merge --alpha auto --select ...``; the curve
        is written next to the model)."""
        from mcip.data import load_records
        from mcip.train.wise import DEFAULT_TEMPLATES
        from mcip.train.wise_merge import wise_merge

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

    # ------------------------------------------------------------------ evaluation and search
    def evaluate(self, models: dict[str, ModelRef], split: str = "test"):
        """Every row on ``split`` (``val`` chooses, ``test`` reports); the report files go to
        ``OUT/results`` (test) or ``OUT/results/val``."""
        from mcip.eval.benchmarks import resolve_benchmarks
        from mcip.eval.report import group_columns, markdown_table, teaser_plot, write_report
        from mcip.eval.runner import evaluate_models

        benchmarks = resolve_benchmarks(",".join(self.benchmark_specs(split)))
        reports = evaluate_models(list(models.values()), benchmarks, self.data["root"], cache_dir=self.cache)
        for row, report in zip(models, reports, strict=True):
            report.model = row
        self.columns = [(b.name, b.family, b.table1_metric) for b in benchmarks]
        folder = self.out / "results" if split == "test" else self.out / "results" / split
        files = write_report(reports, self.columns, folder)
        curve = self.wise_curve_points()
        if split == "test" and curve and "plot" in files:  # the teaser with the WiSE-FT trade-off curve
            pairs = [(n, f) for n, f, _ in self.columns]
            teaser_plot(reports, group_columns(pairs), files["plot"], curve)
        table = markdown_table(reports, [(b.name, b.family) for b in benchmarks])
        return reports, files, table

    def test_is_val(self) -> bool:
        """True when the source has no test split of its own (the report is then on val)."""
        return False

    def recommend(self, reports) -> str:
        """The row to index, from the VAL reports: the best AVG among the rows with every column measured."""
        complete = [r for r in reports if not r.missing] or list(reports)  # text queries need a text side
        return max(complete, key=lambda r: averages_of(r, self.columns)).model

    def search_demo(self, model: ModelRef, row: str) -> str:
        """Index the test images with ``model`` and run the source's example queries."""
        from mcip.index import SearchIndex, build_index

        index_dir = self.out / "index"
        build_index(model, self.data["test"], index_dir, progress=self.progress)
        lines = [f"# One embedding, two kinds of query ({row}, test images)", ""]
        with SearchIndex.open(index_dir) as index:
            for kind, query, shown in self.demo_queries(index):
                hits = index.search(**{kind: query}, k=5)
                lines += [f"{kind} query: {shown}", ""]
                lines += [f"| rank | score | image | {self.demo_column} |", "|---|---|---|---|"]
                for hit in hits:
                    lines.append(f"| {hit.rank} | {hit.score:.3f} | {hit.id} | {self.demo_label(hit)} |")
                lines.append("")
        text = "\n".join(lines)
        (self.out / "results" / "search.md").write_text(text, encoding="utf-8")
        return text

    # ------------------------------------------------------------------ all
    def check_settings(self) -> None:
        """Refuse to continue a run in ``out`` that was started with other settings: its finished stages
        would be reused as if they had been trained with these."""
        path = self.out / self.settings_file
        now = self.settings_record()
        if path.is_file():
            before = json.loads(path.read_text())
            changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
            if changed:
                raise ConfigError(
                    f"{self.out} holds a run with other settings ({', '.join(changed)} differ); its "
                    "finished stages would be reused. Pass --force to start over, or another --out."
                )
        self.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=2))

    def before_data(self) -> None:
        """Checks that need nothing prepared (the lab prepares its data when absent)."""

    def run(self) -> RunResult:
        start = time.perf_counter()
        self.log(f"{self.command}: results in {self.out}")
        self.check_settings()
        self.before_data()
        self.log("[1/7] data")
        self.data = self._timed("data", self.prepare_data)
        self.log(f"  {self.data['summary']}")
        self.log("[2/7] base model")
        base = self._timed("base model", self.base_model)
        self.log("[3/7] pseudo-captions for MCIP")
        captions = self._timed("captions", lambda: self.captions(base))
        self.log("[4/7] fine-tuning the rows")
        models = self._timed("training", lambda: self.stages(base, captions))
        self.log("[5/7] evaluation on the val split (it chooses the recommended row)")
        val_reports, _, _ = self._timed("evaluation (val)", lambda: self.evaluate(models, "val"))
        best = self.recommend(val_reports)
        self.log(f"  recommended on val: {best}")
        if self.test_is_val():
            self.log("[6/7] no test split of its own: the report is on the val images")
            from mcip.eval.report import write_report

            reports, table = val_reports, markdown_table_of(val_reports, self.columns)
            files = write_report(val_reports, self.columns, self.out / "results")  # the report's place
        else:
            self.log("[6/7] evaluation on the test split (read once, after every choice)")
            reports, files, table = self._timed("evaluation (test)", lambda: self.evaluate(models, "test"))
        files.update(self.extra_files())
        self.log(f"[7/7] search: indexing the test images with {best}")
        demo = self._timed("search", lambda: self.search_demo(models[best], best))
        files["search"] = self.out / "results" / "search.md"
        pairs = [(name, family) for name, family, _ in self.columns]
        text = self.write_reading(reports, pairs, val_reports, best)
        files["reading"] = self.out / "results" / "reading.md"
        files["reading"].write_text(text + "\n", encoding="utf-8")
        seconds = time.perf_counter() - start
        summary = {
            "settings": dataclasses.asdict(self.s),
            "models": {k: str(v) for k, v in models.items()},
            "recommended": best,
            "steps_seconds": self.steps,
            "seconds": round(seconds, 1),
            "cpu_count": os.cpu_count(),
        }
        (self.out / "results" / "run.json").write_text(json.dumps(summary, indent=2))
        files["run"] = self.out / "results" / "run.json"
        return RunResult(self.out, models, files, table, text, seconds, self.steps, demo, best)
