"""``mcip fit``: the lab's experiment on a user's own labelled images.

Input: a manifest of the training images (``.csv``, ``.jsonl`` or ``.parquet`` with ``path`` and ``label``,
optional ``captions`` such as a description per image), optionally a validation and a test manifest, a
``label<TAB>name`` file of class names, and a text pool for caption retrieval. The run
(:class:`~mcip.experiment.runner.Runner`, the same steps as ``mcip lab run``):

1. data (``OUT/data``): images whose files are missing are dropped and counted; without ``--val``,
   about ``val_fraction`` of each class's images are held out for validation on seen classes (a class of
   one image stays in train); without ``--test``, the report is on the val images (and says so);
2. base model: the user's model (a spec such as ``openclip:ViT-B-32/openai`` or an mcip model folder);
3. pseudo-captions (``OUT/captions``): the manifest's own captions, then retrieval from ``--pool`` with
   the base model when given, then class-name templates, merged per image; the captions' diversity is
   reported and a degenerate set is warned about;
4. the rows of ``--method`` (``mcip+rea``: MCIP, MCIP+Re-A and the guarded row; ``2sft``: GPR-FT and
   2SFT; ``both``), with the ``fit-mcip+rea`` / ``fit-2sft`` configs (``--set`` overrides them);
5. evaluation of the starting model and every row on the test images: I2I (mAP among the test images),
   k-NN (the train images vote; when every test class is trained), zero-shot over the class names, T2I
   (class names and the images' own captions retrieve every image of their class); the report and a
   plain-words reading with a recommended model;
6. an index of the test images with the recommended model, and the ``mcip serve`` command for it.

``plan_fit`` (``mcip fit --dry-run``) checks everything that can be checked before training and prints the
plan with a time estimate from a measured warm-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mcip.errors import ConfigError
from mcip.experiment.fit.data import FitData, _row, _write_jsonl, read_fit_data
from mcip.experiment.fit.plan import FitPlan, plan_fit
from mcip.experiment.fit.report import GUARD_TEXT_SLACK, fit_reading, recommend, serve_command
from mcip.experiment.fit.settings import FitSettings
from mcip.experiment.rows import GUARDED, ModelRef
from mcip.experiment.runner import Runner, RunResult
from mcip.experiment.training import file_digest, stage_config

VAL_TEMPLATES = ("a photo of a {}.", "a {}.", "an image of a {}.")  # val captions for T2I validation
MAX_CAPTIONS_PER_IMAGE = 20
REALIGN_BATCH = 256  # the Re-A batch of the fit configs


class FitRun(Runner):
    """One ``mcip fit`` (see the module docstring)."""

    command = "mcip fit"
    settings_file = "fit-settings.json"
    # train_stage adds the searched (or chosen) settings after the reuse check would compare them
    # (mcip.experiment.reuse), so a guarded Re-A is always trained here
    reuse_runs = False

    def __init__(self, out: Path, settings: FitSettings, force=False, progress=True, log=print) -> None:
        super().__init__(out, settings, force, progress, log)
        self.configs = {"2sft": settings.config_2sft, "mcip+rea": settings.config_mcip}
        self.method = settings.method

    def check_settings(self) -> None:
        """Also refuse a non-empty ``out`` that holds no ``mcip fit`` run (it would be mixed with this one)."""
        if self.out.is_dir() and any(self.out.iterdir()) and not (self.out / self.settings_file).is_file():
            raise ConfigError(
                f"{self.out} is not empty and holds no mcip fit run; choose a new --out (or an empty folder)."
            )
        super().check_settings()

    def settings_record(self) -> dict:
        record = super().settings_record()
        for key in ("data", "val", "test", "names", "pool"):
            value = getattr(self.s, key)
            if value and Path(value).is_file():
                record[f"{key}_digest"] = file_digest(Path(value))
        return record

    def before_data(self) -> None:
        self.fit_data = read_fit_data(self.s)

    # ------------------------------------------------------------------ the source
    def prepare_data(self) -> dict:
        d, out = self.fit_data, self.out / "data"
        val_rows = []
        for r in d.val:  # val needs captions for T2I validation: its own, else class-name templates
            name = d.names[r.label]
            val_rows.append(_row(r, captions=[*r.captions, *(t.format(name) for t in VAL_TEMPLATES)]))
        names = out / "names.tsv"
        out.mkdir(parents=True, exist_ok=True)
        names.write_text("".join(f"{k}\t{v}\n" for k, v in sorted(d.names.items())), encoding="utf-8")
        paths = {
            "root": out,
            "train_own": _write_jsonl(out / "train_own_captions.jsonl", [_row(r) for r in d.train]),
            "train_no_captions": _write_jsonl(out / "train.jsonl", [_row(r, captions=[]) for r in d.train]),
            "val": _write_jsonl(out / "val.jsonl", val_rows),
            "test": _write_jsonl(out / "test.jsonl", [_row(r) for r in d.test]),
            "eval": _write_jsonl(
                out / "eval.jsonl",
                [
                    *(_row(r, "train") for r in d.train),
                    *(() if d.test is d.val else (_row(r, "val") for r in d.val)),
                    *(_row(r, "test") for r in d.test),
                ],
            ),
            "names": names,
            "summary": d.summary(),
        }
        if d.val_on_seen:
            self.gallery = d.train
        return paths

    def base_model(self) -> ModelRef:
        from mcip.models import load_model

        spec = self.s.model
        model = load_model(spec)  # fail now, not after the captions: a typo, a missing download, ...
        self.log(f"  {spec}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
        del model
        return Path(spec) if Path(spec).is_dir() else spec

    def captions(self, base: ModelRef) -> Path:
        """The MCIP caption sets (:mod:`mcip.experiment.fit.captions`); returns the default policy's sidecar."""
        from mcip.experiment.fit.captions import build_caption_sets
        from mcip.models import load_model

        self.caption_sets = build_caption_sets(
            self.out / "captions",
            self.fit_data.train,
            self.fit_data.names,
            self.s.templates_per_image,
            self.s.pool,
            lambda: load_model(base),
            self.s.caption_top_k,
            self.s.caption_min_sim,
            self.cache,
            self.progress,
            self.log,
        )
        return self.caption_sets.files[self.caption_sets.default]

    # ------------------------------------------------------------------ the recipe
    def stages(self, base: ModelRef, captions: Path) -> dict[str, ModelRef]:
        from mcip.experiment.fit.search import QUICK, RecipeSearch, resolve_mode

        mode = resolve_mode(self.s.search)
        self.recipe_mode, self.chosen = mode, {}
        budget = None if self.s.budget_min is None else self.s.budget_min * 60
        self.search = None
        if mode != "off":
            self.search = RecipeSearch(
                self.out / "search", mode, self.s.trials, budget, seed=self.s.seed, log=self.log
            )
        self.lengths = QUICK if self.search is None else self.search.settings
        return super().stages(base, captions)

    def train_stage(self, pipeline: str, stage: str, out: str, values: dict[str, Any]) -> Path:
        """Search the stage's settings on val the first time it trains (its best trial is the row's
        model), else train it with the settings chosen before (or given)."""
        from mcip.experiment.fit.recipe import Given, length_values, searchable, stage_values

        given = Given.of(self.s, stage)
        values = {
            **values,
            **length_values(stage, given, self.lengths["max_epochs"], self.lengths["patience"]),
        }
        space = self._space(stage, given)
        if self.search is not None and stage not in self.chosen and searchable(space):
            return self._search(pipeline, stage, space, values)
        params = self.chosen.get(stage) or {**space.defaults(), **({"lr": space.lr} if space.lr else {})}
        self.chosen.setdefault(stage, params)
        values |= stage_values(stage, params, self.caption_sets.files)
        return super().train_stage(pipeline, stage, out, values)

    def _space(self, stage: str, given):
        from mcip.experiment.fit.recipe import image_space, realign_space

        if stage == "realign":
            return realign_space(given)
        other = next((p.get("lr") for st, p in self.chosen.items() if st != "realign"), None)
        return image_space(stage, given, self.caption_sets.policies, self.recipe_mode, other)

    def _search(self, pipeline: str, stage: str, space, values: dict[str, Any]) -> Path:
        from mcip.experiment.fit.recipe import stage_values
        from mcip.stages.catalog import stage_entry
        from mcip.stages.run import run_stage

        def train_trial(params, folder, on_validate):
            trial = {**values, **stage_values(stage, params, self.caption_sets.files), "out": str(folder)}
            cfg = stage_config(self.configs[pipeline], stage, trial, overrides=self.s.stage_overrides)
            result = run_stage(cfg, progress=self.progress, on_validate=on_validate)
            return result.train, result.model_dir

        result = self.search.run(space, stage_entry(stage).val_metric, train_trial)
        self.chosen[stage] = result.best_params
        from mcip.experiment.fit.search import _fmt

        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in result.best_params.items())
        self.log(f"  {stage}: chosen on val: {shown} (val {result.metric} {result.best_value:.2f})")
        return result.model_dir

    def extra_files(self) -> dict[str, Path]:
        if self.search is None or not self.search.results:
            return {}
        return self.search.write_report(self.out / "results")

    def common(self) -> dict[str, Any]:
        values = super().common()
        values["data.batch_size"] = min(self.s.batch_size, len(self.fit_data.train))
        return values

    def realign_overrides(self) -> dict[str, Any]:
        """Re-A's batch (the config's 256) shrinks to the number of train images on a small collection."""
        n = len(self.fit_data.train)
        return {"stages.realign.data.batch_size": n} if n < REALIGN_BATCH else {}

    def train_values(self) -> dict[str, Any]:
        """GPR-FT and Re-A: the train images with MCIP's chosen caption set (the default before MCIP)."""
        policy = self.chosen.get("mcip", {}).get("caption_policy", self.caption_sets.default)
        captions = self.caption_sets.files.get(policy, self.captions_file)
        return {"data.train": str(self.data["train_no_captions"]), "data.captions": str(captions)}

    def test_is_val(self) -> bool:
        return self.fit_data.test is self.fit_data.val

    def benchmark_specs(self, split: str = "test") -> list[str]:
        """I2I among the split's images (val on seen classes: the val images searching the train images),
        k-NN (train images vote; when every class of the split has train
        images), zero-shot over the class names, T2I (names and captions retrieve the split's images)."""
        ev, names = self.data["eval"], self.data["names"]
        choosing = split == "val"
        split = "test" if self.test_is_val() else split  # eval.jsonl then holds val as its test split
        # choosing on seen classes: the val images search the train images (a class may have one val image)
        gallery = ",gallery=train" if choosing and self.fit_data.val_on_seen else ""
        specs = [f"manifest_i2i:manifest={ev},split={split}{gallery}"]
        if self.fit_data.knn if split == "test" else self.fit_data.val_on_seen:
            specs.append(f"manifest_knn:manifest={ev},index=train,query={split}")
        specs.append(f"manifest_zeroshot:manifest={ev},split={split},names={names}")
        specs.append(f"captions_t2i:manifest={ev},split={split},match=label,names={names}")
        return specs

    def val_zeroshot(self) -> tuple[dict[str, str] | None, tuple[str, ...]]:
        """The test protocol's zero-shot on val: the class names, OpenAI's 80 templates."""
        from mcip.eval.benchmarks.zeroshot_imagenet import openai_templates

        return self.fit_data.names, openai_templates()

    def demo_queries(self, index) -> list[tuple[str, str, str]]:
        labels = sorted({r.label for r in self.fit_data.test})
        texts = [self.fit_data.names[label] for label in labels[:2]]
        first = index.record(index.ids[0])
        shown = f"{first.id} (label {first.metadata.get('label', '?')})"
        return [("text", t, t) for t in texts] + [("image", first.path, shown)]

    def recommend(self, reports) -> str:
        """From the val reports (:func:`mcip.experiment.fit.report.recommend`)."""
        return recommend(reports, self.columns)

    def write_reading(self, reports, pairs, val_reports, recommended: str) -> str:
        search = self.search.results if getattr(self, "search", None) is not None else {}
        return fit_reading(reports, pairs, recommended, self.fit_data, self.out, val_reports, search=search)


def run_fit(
    out: str | os.PathLike,
    settings: FitSettings,
    force: bool = False,
    progress: bool = True,
    log=print,
) -> RunResult:
    """Run ``mcip fit`` (see the module docstring) into ``out``; ``force`` deletes ``out`` first."""
    out = Path(out)
    if force and out.exists():
        import shutil

        shutil.rmtree(out)
    return FitRun(out, settings, force, progress, log).run()


__all__ = [
    "GUARDED",
    "GUARD_TEXT_SLACK",
    "FitData",
    "FitPlan",
    "FitRun",
    "FitSettings",
    "fit_reading",
    "plan_fit",
    "read_fit_data",
    "recommend",
    "run_fit",
    "serve_command",
]
