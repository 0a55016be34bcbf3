"""``mcip lab run``: the paper's experiment end to end on the emoji lab, with the code paths a GPU user runs.

Steps (each is skipped when its output already exists, so an interrupted run continues; ``force`` redoes):

1. data: the prepared lab (``mcip lab prepare``) as per-split manifests under ``OUT/data`` (a fixed subset
   of the emoji with ``quick``);
2. base model: the composed EfficientNet-Lite0 + MiniLM model aligned with the ``align`` stage on the
   train split's image-caption pairs (``lab-align.yaml``); cached under ``ROOT/models`` for later runs;
3. pseudo-captions for MCIP: :func:`mcip.captions.retrieve_captions` (``mcip captions retrieve``) of the
   base model over the train split's caption pool;
4. the rows (:data:`ROWS`): GPR-FT, 2SFT (GPR-FT + Re-A), MCIP, MCIP+Re-A (``lab-2sft.yaml``,
   ``lab-mcip+rea.yaml``; the paper's selection: val I2I for the image stages, val T2I for Re-A, which
   runs until val stops improving), the guarded row (the MCIP row's model merged with the base by WiSE-FT
   at the alpha picked on val ``combined``, then Re-A selected on ``combined``) and, with ``all_rows``, GPR-FT
   without projector (ICMR'23); every choice is made on the val split;
5. evaluation on the test split (emoji never seen in training) with the ``lab_*`` benchmarks, and the
   report: ``OUT/results/{table1.md,results.json,table1.csv,teaser.png,reading.md}``;
6. search: the test images indexed (``OUT/index``, :mod:`mcip.index`) with the row of the best average,
   queried by two texts and one image (``OUT/results/search.md``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mcip.errors import ConfigError
from mcip.lab.reading import reading
from mcip.lab.subset import write_lab_data
from mcip.losses.mcarcmargin import DEFAULT_HARD_CAPTION_WEIGHT

LOG = Callable[[str], None]


@dataclass(frozen=True)
class LabSettings:
    """What a lab run trains and how long. Hyper-parameters of each stage live in the shipped configs
    (``lab-align``, ``lab-2sft``, ``lab-mcip+rea``); these are the run's size and the MCIP captions."""

    base_spec: str = "composed:lab"
    image_size: int = 128
    subset: float = 1.0  # fraction of base emoji kept in every split (quick: a fixed smaller set)
    align_epochs: int = 10
    stage_epochs: int = 1
    realign_epochs: int = 30  # an upper bound: Re-A stops when val has not improved for realign_patience
    realign_patience: int = 3  # validations (one per epoch) without a new best
    max_steps: int | None = None  # cap on optimiser steps per image stage (quick)
    align_max_steps: int | None = None
    align_val_every: int | None = 350  # validate the base model every N steps (None: each epoch end)
    batch_size: int = 64
    num_workers: int = 2
    caption_top_k: int = 10
    caption_min_sim: float = 0.2
    hard_caption_weight: float = DEFAULT_HARD_CAPTION_WEIGHT
    mc_weight: float = 0.25  # MCIP: arc_weight = 1 - mc_weight
    all_rows: bool = False  # also GPR-FT without projector (ICMR'23)
    # the guarded row: the MCIP row's model merged with the base by WiSE-FT at the alpha of this grid that
    # maximises val "combined", then Re-A selected on "combined"
    wise_grid: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    base_overrides: tuple[str, ...] = ()  # extra --set overrides for the align stage
    stage_overrides: tuple[str, ...] = ()  # extra --set overrides for every other stage

    def validate(self) -> LabSettings:
        if not 0 < self.subset <= 1:
            raise ConfigError(f"subset must be in (0, 1], got {self.subset}.")
        if min(self.align_epochs, self.stage_epochs, self.realign_epochs, self.batch_size) < 1:
            raise ConfigError("Epochs and batch size must be >= 1.")
        if not 0 <= self.mc_weight <= 1:
            raise ConfigError(f"mc_weight must be in [0, 1], got {self.mc_weight}.")
        if not self.wise_grid or any(not 0 <= a <= 1 for a in self.wise_grid):
            raise ConfigError(f"wise_grid must hold alphas in [0, 1], got {self.wise_grid}.")
        return self


FULL = LabSettings()
QUICK = LabSettings(
    subset=0.25,
    align_epochs=5,
    stage_epochs=1,
    realign_epochs=4,
    realign_patience=2,
    max_steps=12,
    align_val_every=None,
    wise_grid=(0.0, 0.5, 1.0),
)

DEMO_TEXT_QUERIES = ("a happy face", "an animal")
DEMO_K = 5


def averages_of(report, columns) -> float:
    """A report's AVG over the table's columns (-inf when nothing was measured)."""
    from mcip.eval.report import averages, group_columns

    value = averages(report, group_columns([(n, f) for n, f, _ in columns]))["AVG"][0]
    return float("-inf") if value is None else value


@dataclass(frozen=True)
class Row:
    """One row of the lab's table: ``method`` names the :class:`LabRun` method that makes its model."""

    name: str
    description: str
    method: str
    extra: bool = False  # only with ``all_rows``

    def __iter__(self):  # (name, description), as rows were once pairs
        return iter((self.name, self.description))


GUARDED = "MCIP+Re-A (guarded)"
ROWS: tuple[Row, ...] = (
    Row("baseline", "the aligned base model", "baseline"),
    Row(
        "GPR-FT (no proj.)",
        "ArcMargin on the image tower, embedding before the projector (ICMR'23)",
        "gpr_no_proj",
        extra=True,
    ),
    Row("GPR-FT", "ArcMargin on the image tower and projector", "gpr"),
    Row("2SFT", "GPR-FT, then Re-A of the text tower (until val T2I stops improving)", "sft"),
    Row("MCIP", "ArcMargin + multi-caption ArcMargin on pseudo-captions", "mcip"),
    Row("MCIP+Re-A", "MCIP, then Re-A of the text tower", "mcip_rea"),
    Row(
        GUARDED,
        "MCIP, WiSE-FT merge with the base (alpha picked on val combined), Re-A selected on combined: "
        "every choice on val",
        "guarded",
    ),
)


def lab_rows(settings: LabSettings) -> list[Row]:
    """The rows a run with ``settings`` trains, in table order."""
    return [r for r in ROWS if settings.all_rows or not r.extra]


@dataclass
class LabResult:
    out: Path
    models: dict[str, Path]  # row -> mcip model directory
    files: dict[str, Path]  # report files
    table: str  # Markdown
    reading: str
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    search: str = ""  # the search demo (Markdown)


def _digest(*parts: object) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=6).hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()


def _done(model_dir: Path) -> bool:
    from mcip.models.checkpoint import META_FILE

    return (model_dir / META_FILE).is_file()


def _stage_config(name: str, stage: str, overrides: list[str], model_kwargs: dict | None = None):
    """The shipped config ``name`` resolved for one of its stages, with ``--set`` style overrides
    (and the backend options ``model_kwargs`` replacing the file's, when given)."""
    from mcip.train.config import load_config, resolve_stage

    raw = load_config(name, overrides)
    raw.pop("pipeline", None)
    raw.pop("stage", None)
    if model_kwargs is not None:
        raw.setdefault("model", {})["kwargs"] = model_kwargs
    return resolve_stage(raw, stage)


def _run_stage(cfg, log: LOG, what: str, progress: bool) -> Path:
    """Run one stage unless its model exists; continue an interrupted one from its last checkpoint."""
    from mcip.train.stages import run_stage

    model_dir = Path(cfg.out) / "model"
    if _done(model_dir):
        log(f"  {what}: done earlier ({model_dir})")
        return model_dir
    log(f"  {what}: training ({cfg.stage}, {cfg.loop.epochs} epoch(s), out {cfg.out})")
    result = run_stage(cfg, resume=(Path(cfg.out) / "checkpoints").is_dir(), progress=progress)
    r = result.train
    log(f"  {what}: {r.steps} steps in {r.seconds:.0f} s, best val {r.val_metric} = {r.best_metric}")
    return result.model_dir


class LabRun:
    """One ``mcip lab run``: see the module docstring. ``run()`` returns a :class:`LabResult`."""

    def __init__(
        self,
        root: Path,
        out: Path,
        settings: LabSettings,
        force: bool = False,
        progress: bool = True,
        log: LOG = print,
    ) -> None:
        self.root, self.out, self.s = Path(root), Path(out), settings.validate()
        self.force, self.progress, self.log = force, progress, log
        self.cache = self.root / "cache"
        self.steps: dict[str, float] = {}

    def _timed(self, name: str, fn: Callable[[], object]):
        start = time.perf_counter()
        value = fn()
        self.steps[name] = round(time.perf_counter() - start, 1)
        return value

    # ------------------------------------------------------------------ steps
    def common(self) -> list[str]:
        s = self.s
        return [
            f"data.batch_size={s.batch_size}",
            f"data.num_workers={s.num_workers}",
            f"data.val={self.data['val']}",
            f"cache_dir={self.cache}",
            "loop.precision=fp32",
            *([f"loop.max_steps={s.max_steps}"] if s.max_steps else []),
        ]

    def base_model(self) -> Path:
        s = self.s
        key = _digest(
            s.base_spec,
            s.image_size,
            s.align_epochs,
            s.align_max_steps,
            s.align_val_every,
            s.batch_size,
            s.base_overrides,
            _file_digest(self.data["train"]),
            _file_digest(self.data["val"]),
        )
        out = self.root / "models" / f"base-{key}"
        overrides = [
            f"model.spec={s.base_spec}",
            f"data.train={self.data['train']}",
            f"out={out}",
            *[o for o in self.common() if not o.startswith("loop.max_steps")],
            f"loop.epochs={s.align_epochs}",
            *([f"loop.max_steps={s.align_max_steps}"] if s.align_max_steps else []),
            *([f"loop.val_every={s.align_val_every}"] if s.align_val_every else []),
            *s.base_overrides,
        ]
        kwargs = {"image_size": s.image_size} if s.base_spec == "composed:lab" else {}
        cfg = _stage_config("lab-align", "align", overrides, kwargs)
        return _run_stage(cfg, self.log, "base model (align, cached for later runs)", self.progress)

    def captions(self, base: Path) -> Path:
        from mcip.captions.retrieve import retrieve_captions
        from mcip.data import load_records
        from mcip.models import load_model

        out = self.out / "captions" / "retrieved.jsonl"
        marker = out.with_suffix(".done")
        if marker.is_file() and not self.force:
            self.log(f"  pseudo-captions: done earlier ({out})")
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        records = load_records(self.data["train"])
        pool = out.parent / "pool.txt"
        texts = sorted({c for r in records for c in r.captions})
        pool.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        summary = retrieve_captions(
            load_model(base),
            records,
            pool,
            out,
            top_k=self.s.caption_top_k,
            min_sim=self.s.caption_min_sim,
            cache_dir=self.cache,
            progress=self.progress,
        )
        marker.write_text(json.dumps(dataclasses.asdict(summary), indent=2))
        per_image = summary.captions_written / max(summary.images - summary.skipped_done, 1)
        self.log(
            f"  pseudo-captions: {summary.captions_written} for {summary.images} images "
            f"({per_image:.1f} per image, {summary.without_captions} without any) from a pool of "
            f"{summary.pool_unique} train-split captions"
        )
        return out

    def stages(self, base: Path, captions: Path) -> dict[str, Path]:
        """Train every row of :func:`lab_rows` (each reuses the models of the rows it builds on)."""
        self.base, self.captions_file, self.made = base, captions, {"baseline": base}
        return {row.name: self._model(row.method) for row in lab_rows(self.s)}

    def _model(self, method: str) -> Path:
        if method not in self.made:
            self.made[method] = getattr(self, f"row_{method}")()
        return self.made[method]

    def _stage(self, config: str, stage: str, spec: Path, out: str, *extra: str) -> Path:
        s = self.s
        if stage == "realign":
            common = [o for o in self.common() if not o.startswith(("loop.max_steps", "data.batch_size"))]
            common += [
                f"loop.epochs={s.realign_epochs}",
                f"loop.early_stopping_patience={s.realign_patience}",
            ]
        else:
            common = [*self.common(), f"loop.epochs={s.stage_epochs}"]
        overrides = [f"model.spec={spec}", f"out={self.out / 'runs' / out}", *common, *s.stage_overrides]
        return _run_stage(_stage_config(config, stage, [*overrides, *extra]), self.log, out, self.progress)

    def _train(self) -> str:
        return f"data.train={self.data['train']}"

    def _mcip_args(self) -> list[str]:
        s = self.s
        return [
            f"data.train={self.data['train_no_captions']}",
            f"data.captions={self.captions_file}",
            f"loss.hard_caption_weight={s.hard_caption_weight}",
            f"loss.mc_weight={s.mc_weight}",
            f"loss.arc_weight={1 - s.mc_weight}",
        ]

    def row_baseline(self) -> Path:
        return self.base

    def row_gpr_no_proj(self) -> Path:
        return self._stage(
            "lab-2sft", "gpr", self.base, "gpr-no-proj", self._train(), "model.drop_projector=true"
        )

    def row_gpr(self) -> Path:
        return self._stage("lab-2sft", "gpr", self.base, "gpr", self._train())

    def row_sft(self) -> Path:
        return self._stage("lab-2sft", "realign", self._model("gpr"), "2sft", self._train())

    def row_mcip(self) -> Path:
        return self._stage("lab-mcip+rea", "mcip", self.base, "mcip", *self._mcip_args())

    def row_mcip_rea(self) -> Path:
        return self._stage("lab-mcip+rea", "realign", self._model("mcip"), "mcip-rea", self._train())

    def row_guarded(self) -> Path:
        """The MCIP row's model (selected on val I2I, the paper's choice), merged with the base by WiSE-FT at
        the alpha that maximises val ``combined``, then Re-A selected on ``combined``. (Selecting the MCIP
        stage itself on ``combined`` keeps the start: the text loss it sees is what WiSE-FT and Re-A
        recover afterwards.)"""
        merged = self.wise(self._model("mcip"), "guard-wise")
        return self._stage(
            "lab-mcip+rea", "realign", merged, "guard-rea", self._train(), "loop.select=combined"
        )

    def wise(self, finetuned: Path, out: str) -> Path:
        """WiSE-FT of the base and ``finetuned`` at the alpha of :attr:`LabSettings.wise_grid` that
        maximises val ``combined`` (``mcip merge --alpha auto``; the curve is written next to the model)."""
        from mcip.data import load_records
        from mcip.train.wise_merge import wise_merge

        folder = self.out / "runs" / out
        if _done(folder / "model"):
            self.log(f"  {out}: done earlier ({folder / 'model'})")
            return folder / "model"
        self.log(f"  {out}: WiSE-FT of the base and {finetuned.parent.name}, alpha chosen on val")
        result = wise_merge(
            self.base,
            finetuned,
            folder / "model",
            alpha="auto",
            val=load_records(self.data["val"]),
            grid=self.s.wise_grid,
            select="combined",
            curve_dir=folder,
            progress=False,
        )
        chosen = result.curve.at(result.alpha) if result.curve else None
        shown = ", ".join(f"{k} {v:.1f}" for k, v in (chosen or {}).items() if k in ("i2i_map", "t2i_r5"))
        self.log(f"  {out}: alpha {result.alpha:g} ({shown} on val)")
        return result.model_dir

    def wise_curve_points(self) -> list[dict] | None:
        """The guarded row's WiSE-FT curve on val, each point marked ``chosen`` or not (for the teaser)."""
        path = self.out / "runs" / "guard-wise" / "wise_curve.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return [dict(p, chosen=p["alpha"] == data["chosen_alpha"]) for p in data["curve"]]

    def evaluate(self, models: dict[str, Path]):
        from mcip.eval.benchmarks import resolve_benchmarks
        from mcip.eval.benchmarks.lab import LAB_BENCHMARKS
        from mcip.eval.report import group_columns, markdown_table, teaser_plot, write_report
        from mcip.eval.runner import evaluate_models

        benchmarks = resolve_benchmarks(",".join(LAB_BENCHMARKS))
        reports = evaluate_models(list(models.values()), benchmarks, self.data["root"], cache_dir=self.cache)
        for row, report in zip(models, reports, strict=True):
            report.model = row
        self.columns = [(b.name, b.family, b.table1_metric) for b in benchmarks]
        files = write_report(reports, self.columns, self.out / "results")
        curve = self.wise_curve_points()
        if curve and "plot" in files:  # the teaser with the WiSE-FT trade-off curve as its last panel
            pairs = [(n, f) for n, f, _ in self.columns]
            teaser_plot(reports, group_columns(pairs), files["plot"], curve)
        table = markdown_table(reports, [(b.name, b.family) for b in benchmarks])
        return reports, files, table

    def search_demo(self, model: Path, row: str) -> str:
        """Index the test images with ``model`` and show two text queries and one image query."""
        from mcip.index import SearchIndex, build_index

        index_dir = self.out / "index"
        build_index(model, self.data["test"], index_dir, progress=self.progress)
        lines = [f"# One embedding, two kinds of query ({row}, test images)", ""]
        with SearchIndex.open(index_dir) as index:
            query_image = index.record(index.ids[0])
            queries = [("text", q) for q in DEMO_TEXT_QUERIES] + [("image", query_image.path)]
            for kind, query in queries:
                hits = index.search(**{kind: query}, k=DEMO_K)
                shown = f"{query_image.id} ({query_image.metadata.get('captions', [''])[0]})"
                lines += [f"{kind} query: {query if kind == 'text' else shown}", ""]
                lines += ["| rank | score | image | emoji |", "|---|---|---|---|"]
                for hit in hits:
                    name = (hit.metadata.get("captions") or [""])[0]
                    lines.append(f"| {hit.rank} | {hit.score:.3f} | {hit.id} | {name} |")
                lines.append("")
        text = "\n".join(lines)
        (self.out / "results" / "search.md").write_text(text, encoding="utf-8")
        return text

    # ------------------------------------------------------------------ all
    def check_settings(self) -> None:
        """Refuse to continue a run in ``out`` that was started with other settings: its finished stages
        would be reused as if they had been trained with these."""
        path = self.out / "lab-settings.json"
        now = json.loads(json.dumps(dataclasses.asdict(self.s)))
        if path.is_file():
            before = json.loads(path.read_text())
            changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
            if changed:
                raise ConfigError(
                    f"{self.out} holds a lab run with other settings ({', '.join(changed)} differ); its "
                    "finished stages would be reused. Pass --force to start over, or another --out."
                )
        self.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=2))

    def run(self) -> LabResult:
        start = time.perf_counter()
        self.log(f"mcip lab run: data {self.root}, results {self.out}")
        self.check_settings()
        self.log("[1/6] data")
        if not (self.root / "manifest.jsonl").is_file():
            from mcip.lab.prepare import prepare_lab

            self.log(f"  no prepared lab in {self.root}: running `mcip lab prepare` first")
            self._timed("prepare", lambda: prepare_lab(self.root, progress=self.progress))
        self.data = self._timed("data", lambda: write_lab_data(self.root, self.out / "data", self.s.subset))
        self.log(f"  {self.data['summary']}")
        self.log("[2/6] base model")
        base = self._timed("base model", self.base_model)
        self.log("[3/6] pseudo-captions for MCIP (retrieval from the train caption pool)")
        captions = self._timed("captions", lambda: self.captions(base))
        self.log("[4/6] fine-tuning the rows")
        models = self._timed("training", lambda: self.stages(base, captions))
        self.log("[5/6] evaluation on the test split")
        reports, files, table = self._timed("evaluation", lambda: self.evaluate(models))
        complete = [r for r in reports if not r.missing] or reports  # text queries need a text side
        best = max(complete, key=lambda r: averages_of(r, self.columns))
        self.log(f"[6/6] search: indexing the test images with the best row ({best.model})")
        demo = self._timed("search", lambda: self.search_demo(models[best.model], best.model))
        files["search"] = self.out / "results" / "search.md"
        pairs = [(name, family) for name, family, _ in self.columns]
        text = reading(reports, pairs, quick=self.s.subset < 1 or self.s.max_steps is not None)
        files["reading"] = self.out / "results" / "reading.md"
        files["reading"].write_text(text + "\n", encoding="utf-8")
        seconds = time.perf_counter() - start
        summary = {
            "settings": dataclasses.asdict(self.s),
            "models": {k: str(v) for k, v in models.items()},
            "steps_seconds": self.steps,
            "seconds": round(seconds, 1),
            "cpu_count": os.cpu_count(),
        }
        (self.out / "results" / "run.json").write_text(json.dumps(summary, indent=2))
        files["run"] = self.out / "results" / "run.json"
        return LabResult(self.out, models, files, table, text, seconds, self.steps, demo)


def run_lab(
    root: str | os.PathLike,
    out: str | os.PathLike,
    quick: bool = False,
    settings: LabSettings | None = None,
    force: bool = False,
    progress: bool = True,
    log: LOG = print,
) -> LabResult:
    """Run the lab (see the module docstring) on the prepared data in ``root``, writing to ``out``.

    ``settings`` defaults to :data:`QUICK` or :data:`FULL`; ``force`` deletes ``out`` first (the cached
    base model under ``root/models`` is kept: delete it to re-align).
    """
    out = Path(out)
    if force and out.exists():
        import shutil

        shutil.rmtree(out)
    chosen = settings or (QUICK if quick else FULL)
    return LabRun(Path(root), out, chosen, force, progress, log).run()
