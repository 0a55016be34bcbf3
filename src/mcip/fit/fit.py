"""``mcip fit``: the lab's experiment on a user's own labelled images.

Input: a manifest of the training images (``.csv``, ``.jsonl`` or ``.parquet`` with ``path`` and ``label``,
optional ``captions`` such as a description per image), optionally a validation and a test manifest, a
``label<TAB>name`` file of class names, and a text pool for caption retrieval. The run
(:class:`~mcip.fit.runner.Runner`, the same steps as ``mcip lab run``):

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

import json
import os
from pathlib import Path
from typing import Any

from mcip.errors import ConfigError
from mcip.fit.data import FitData, _row, _write_jsonl, read_fit_data
from mcip.fit.plan import FitPlan, plan_fit
from mcip.fit.report import GUARD_TEXT_SLACK, fit_reading, recommend, serve_command
from mcip.fit.runner import GUARDED, ModelRef, Runner, RunResult, file_digest
from mcip.fit.settings import FitSettings

VAL_TEMPLATES = ("a photo of a {}.", "a {}.", "an image of a {}.")  # val captions for T2I validation
MAX_CAPTIONS_PER_IMAGE = 20
REALIGN_BATCH = 256  # the Re-A batch of the fit configs


class FitRun(Runner):
    """One ``mcip fit`` (see the module docstring)."""

    command = "mcip fit"
    settings_file = "fit-settings.json"

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
                [*(_row(r, "train") for r in d.train), *(_row(r, "test") for r in d.test)],
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
        """The MCIP captions of every train image: its own, then retrieved from ``--pool``, then templates."""
        from mcip.captions.diversity import caption_diversity, format_diversity
        from mcip.captions.merge import merge_sidecars
        from mcip.captions.templates import template_captions
        from mcip.data.captions import write_caption_sidecar

        folder = self.out / "captions"
        out = folder / "captions.jsonl"
        marker = folder / "captions.done"
        if marker.is_file():
            self.log(f"  captions: done earlier ({out})")
            return out
        folder.mkdir(parents=True, exist_ok=True)
        train = self.fit_data.train
        sources = []
        own = {r.id: [{"text": t, "source": "manifest", "score": None} for t in r.captions] for r in train}
        own = {k: v for k, v in own.items() if v}
        if own:
            path = folder / "own.jsonl"
            path.unlink(missing_ok=True)
            write_caption_sidecar(path, own)
            sources.append(path)
        summary = {"own": sum(len(v) for v in own.values())}
        if self.s.pool:
            from mcip.captions.retrieve import retrieve_captions
            from mcip.models import load_model

            retrieved = folder / "retrieved.jsonl"
            result = retrieve_captions(
                load_model(base),
                train,
                self.s.pool,
                retrieved,
                top_k=self.s.caption_top_k,
                min_sim=self.s.caption_min_sim,
                cache_dir=self.cache,
                progress=self.progress,
            )
            summary["retrieved"] = result.captions_written
            summary["without_retrieved"] = result.without_captions
            sources.append(retrieved)
        templates = folder / "templates.jsonl"
        templates.unlink(missing_ok=True)
        summary["templates"] = template_captions(
            train, templates, self.fit_data.names, per_image=self.s.templates_per_image
        )
        sources.append(templates)
        merged = merge_sidecars(sources, out, max_per_image=MAX_CAPTIONS_PER_IMAGE)
        diversity = caption_diversity(merged, train, self.fit_data.names)
        summary["diversity"] = diversity.as_dict()
        self.log(
            f"  captions: {sum(len(v) for v in merged.values())} for {len(merged)} images (own "
            f"{summary['own']}, retrieved {summary.get('retrieved', 'n/a: no --pool')}, templates "
            f"{summary['templates']})"
        )
        self.log(f"  {format_diversity(diversity)}")
        if s := diversity.warning(str(out), str(self.data["train_no_captions"])):
            self.log(f"  warning: {s}")
        marker.write_text(json.dumps(summary, indent=2))
        return out

    def common(self) -> dict[str, Any]:
        values = super().common()
        values["data.batch_size"] = min(self.s.batch_size, len(self.fit_data.train))
        return values

    def realign_overrides(self) -> dict[str, Any]:
        """Re-A's batch (the config's 256) shrinks to the number of train images on a small collection."""
        n = len(self.fit_data.train)
        return {"stages.realign.data.batch_size": n} if n < REALIGN_BATCH else {}

    def train_values(self) -> dict[str, Any]:
        return {"data.train": str(self.data["train_no_captions"]), "data.captions": str(self.captions_file)}

    def benchmark_specs(self) -> list[str]:
        ev, names = self.data["eval"], self.data["names"]
        specs = [f"manifest_i2i:manifest={ev},split=test"]
        if self.fit_data.knn:
            specs.append(f"manifest_knn:manifest={ev},index=train,query=test")
        specs.append(f"manifest_zeroshot:manifest={ev},split=test,names={names}")
        specs.append(f"captions_t2i:manifest={ev},split=test,match=label,names={names}")
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
        return recommend(reports, self.columns)

    def write_reading(self, reports, pairs) -> str:
        return fit_reading(reports, pairs, self.recommend(reports), self.fit_data, self.out)


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
