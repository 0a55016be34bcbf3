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

The runner is made of three parts, one file each: the rows' training (:mod:`mcip.experiment.training`),
their evaluation (:mod:`mcip.experiment.evaluation`) and the search demo
(:mod:`mcip.experiment.search_demo`); the rows themselves are a table (:mod:`mcip.experiment.rows`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mcip.errors import ConfigError
from mcip.experiment.evaluation import Evaluation, averages_of, markdown_table_of  # noqa: F401
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
from mcip.experiment.search_demo import SearchDemo
from mcip.experiment.training import (  # noqa: F401  (re-exported: the old mcip.fit.runner's names)
    RowTraining,
    digest,
    file_digest,
    model_done,
    run_stage_once,
    stage_config,
)


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


class Runner(RowTraining, Evaluation, SearchDemo):
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
    # (and benchmark_specs, Evaluation's; demo_queries, SearchDemo's)
    def prepare_data(self) -> dict:
        raise NotImplementedError

    def base_model(self) -> ModelRef:
        raise NotImplementedError

    def captions(self, base: ModelRef) -> Path:
        raise NotImplementedError

    def write_reading(self, reports, pairs: list[tuple[str, str]], val_reports, recommended: str) -> str:
        """The plain-words reading of the test ``reports``; ``val_reports`` (same rows) chose
        ``recommended``."""
        raise NotImplementedError

    def extra_files(self) -> dict[str, Path]:
        """Report files a source writes besides the table (``mcip fit``: the recipe search's)."""
        return {}

    def rows(self) -> list[Row]:
        return select_rows(self.s.all_rows, self.method)

    def settings_record(self) -> dict:
        """What must match for an existing ``out`` to be continued (JSON-able)."""
        return json.loads(json.dumps(dataclasses.asdict(self.s)))

    def before_data(self) -> None:
        """Checks that need nothing prepared (the lab prepares its data when absent)."""

    # ------------------------------------------------------------------ the run
    def _timed(self, name: str, fn: Callable[[], object]):
        start = time.perf_counter()
        value = fn()
        self.steps[name] = round(time.perf_counter() - start, 1)
        return value

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
        reports, files, table = self.report_on_test(models, val_reports)
        files.update(self.extra_files())
        self.log(f"[7/7] search: indexing the test images with {best}")
        demo = self._timed("search", lambda: self.search_demo(models[best], best))
        files["search"] = self.out / "results" / "search.md"
        pairs = [(name, family) for name, family, _ in self.columns]
        text = self.write_reading(reports, pairs, val_reports, best)
        files["reading"] = self.out / "results" / "reading.md"
        files["reading"].write_text(text + "\n", encoding="utf-8")
        seconds = time.perf_counter() - start
        files["run"] = self.write_summary(models, best, seconds)
        return RunResult(self.out, models, files, table, text, seconds, self.steps, demo, best)

    def write_summary(self, models: dict[str, ModelRef], best: str, seconds: float) -> Path:
        """``OUT/results/run.json``: the settings, the rows' models, the recommendation and the time."""
        summary = {
            "settings": dataclasses.asdict(self.s),
            "models": {k: str(v) for k, v in models.items()},
            "recommended": best,
            "steps_seconds": self.steps,
            "seconds": round(seconds, 1),
            "cpu_count": os.cpu_count(),
        }
        path = self.out / "results" / "run.json"
        path.write_text(json.dumps(summary, indent=2))
        return path
