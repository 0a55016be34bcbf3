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
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mcip.errors import ConfigError, InputError
from mcip.fit.runner import (
    GUARDED,
    METHODS,
    ModelRef,
    Runner,
    RunResult,
    RunSettings,
    file_digest,
    select_rows,
)

VAL_TEMPLATES = ("a photo of a {}.", "a {}.", "an image of a {}.")  # val captions for T2I validation
GUARD_TEXT_SLACK = 0.5  # a row "keeps the text side" when zero-shot and T2I lose at most this many points
MAX_CAPTIONS_PER_IMAGE = 20
REALIGN_BATCH = 256  # the Re-A batch of the fit configs


@dataclass(frozen=True)
class FitSettings(RunSettings):
    """A ``mcip fit`` run: the inputs, the method and (from :class:`RunSettings`) how the rows train."""

    data: str = ""  # training manifest
    model: str = ""  # starting model: a spec or an mcip model folder
    method: str = "mcip+rea"
    val: str | None = None
    test: str | None = None
    names: str | None = None  # label<TAB>name
    pool: str | None = None  # texts for caption retrieval
    val_fraction: float = 0.1
    templates_per_image: int = 5
    seed: int = 0
    stage_epochs: int = 3
    num_workers: int = 4
    config_2sft: str = "fit-2sft"
    config_mcip: str = "fit-mcip+rea"

    def validate(self) -> FitSettings:
        if not self.data:
            raise ConfigError("mcip fit needs the training manifest: --data train.csv.")
        if not self.model:
            raise ConfigError(
                "mcip fit needs the starting model: --model SPEC (e.g. openclip:ViT-B-32/openai, "
                "hf:openai/clip-vit-base-patch32, or an mcip model folder)."
            )
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}.")
        if self.templates_per_image < 1:
            raise ConfigError(f"--templates-per-image must be >= 1, got {self.templates_per_image}.")
        return super().validate()


def _existing(records, what: str):
    """(records whose image file exists, the number dropped); an empty result is an error."""
    kept = [r for r in records if Path(r.path).is_file()]
    if not kept:
        example = f" (e.g. {records[0].path})" if records else ""
        raise InputError(
            f"{what}: none of its {len(records)} images exists{example}. Relative paths start at the "
            "manifest's folder; check the path column."
        )
    return kept, len(records) - len(kept)


def _load(path: str, what: str):
    from mcip.data import load_records

    if not Path(path).exists():
        raise InputError(f"{what} {path} does not exist.")
    records = load_records(path)
    missing = [r.id for r in records if not r.label]
    if missing:
        raise InputError(
            f"{what} {path}: {len(missing)} row(s) have no label (e.g. {missing[0]!r}); mcip fit needs a "
            "label per image (the class it shows)."
        )
    return records


def _row(record, split: str | None = None, captions: Sequence[str] | None = None) -> dict:
    row = {"id": record.id, "path": str(Path(record.path).resolve()), "label": record.label}
    row["captions"] = list(record.captions if captions is None else captions)
    if split:
        row["split"] = split
    return row


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    from mcip._io import atomic_open

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@dataclass
class FitData:
    """The splits of a fit, before anything is written."""

    train: list
    val: list
    test: list
    names: dict[str, str]
    val_on_seen: bool
    val_source: str  # "--val FILE" or "held out: ..."
    test_source: str
    dropped: dict[str, int]  # split -> images whose file is missing
    knn: bool  # every test class has train images (k-NN is measurable)

    def summary(self) -> str:
        def part(name, rs):
            return f"{name} {len(rs)} images / {len({r.label for r in rs})} classes"

        line = "; ".join([part("train", self.train), part("val", self.val), part("test", self.test)])
        line += f". Validation: {self.val_source}, on {'seen' if self.val_on_seen else 'unseen'} classes"
        line += f"; report on {self.test_source}"
        dropped = {k: v for k, v in self.dropped.items() if v}
        if dropped:
            line += "; missing files skipped: " + ", ".join(f"{k} {v}" for k, v in dropped.items())
        return line


def read_fit_data(s: FitSettings) -> FitData:
    """Read and check the inputs of ``s`` (seconds, no model): every problem a run could meet in its data is
    raised here, before training starts."""
    from mcip.captions.templates import read_class_names
    from mcip.data.split import split_within_classes

    train, dropped_train = _existing(_load(s.data, "--data"), "--data")
    dropped = {"train": dropped_train}
    if s.val:
        val, dropped["val"] = _existing(_load(s.val, "--val"), "--val")
        trained, labels = {r.label for r in train}, {r.label for r in val}
        val_on_seen = bool(trained & labels)
        new = sorted(labels - trained)
        if val_on_seen and new:
            raise InputError(
                f"--val shares classes with --data, so validation is on seen classes, but {len(new)} of its "
                f"{len(labels)} classes never appear in --data (e.g. {new[0]!r}): their images have nothing "
                "to find among the training images. Remove them from --val, or give a --val that shares "
                "no class with --data (validation on unseen classes)."
            )
        val_source = f"--val {s.val}"
    else:
        train, val = split_within_classes(train, s.val_fraction, s.seed)
        val_on_seen = True
        val_source = f"held out {len(val)} images ({s.val_fraction:.0%} of each class with 2+ images)"
        if not val:
            raise InputError(
                "--data has no class with two or more images, so nothing can be held out for validation; "
                "add images, or pass --val."
            )
    if len({r.label for r in train}) < 2:
        raise InputError("--data needs at least two classes to fine-tune with class labels.")
    if s.test:
        test, dropped["test"] = _existing(_load(s.test, "--test"), "--test")
        test_source = f"--test {s.test}"
    else:
        test, test_source = val, "the val images (no --test given; numbers are optimistic: val also chose)"
    labels = sorted({r.label for r in [*train, *val, *test]})
    names = (
        read_class_names(s.names, labels) if s.names else {label: label.replace("_", " ") for label in labels}
    )
    if s.pool:
        if not Path(s.pool).is_file():
            raise InputError(f"--pool {s.pool} does not exist.")
        from mcip.captions.retrieve import load_pool

        try:
            texts, _ = load_pool(s.pool, None)
        except InputError:
            texts = []
        if not texts:
            raise InputError(
                f"--pool {s.pool} holds no text: give a file with one caption per line (or leave out "
                "--pool to use class-name templates only)."
            )
    knn = {r.label for r in test} <= {r.label for r in train}
    return FitData(train, val, test, names, val_on_seen, val_source, test_source, dropped, knn)


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

    def common(self) -> list[str]:
        n = len(self.fit_data.train)
        batch = min(self.s.batch_size, n)
        return [
            f"data.batch_size={batch}" if o.startswith("data.batch_size=") else o for o in super().common()
        ]

    def realign_overrides(self) -> list[str]:
        """Re-A's batch (the config's 256) shrinks to the number of train images on a small collection."""
        n = len(self.fit_data.train)
        return [f"stages.realign.data.batch_size={n}"] if n < REALIGN_BATCH else []

    def _train_args(self) -> list[str]:
        return [f"data.train={self.data['train_no_captions']}", f"data.captions={self.captions_file}"]

    def benchmark_specs(self) -> list[str]:
        ev, names = self.data["eval"], self.data["names"]
        specs = [f"manifest_i2i:manifest={ev},split=test"]
        if self.fit_data.knn:
            specs.append(f"manifest_knn:manifest={ev},index=train,query=test")
        specs.append(f"manifest_zeroshot:manifest={ev},split=test,names={names}")
        specs.append(f"captions_t2i:manifest={ev},split=test,match=label,names={names}")
        return specs

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


# ---------------------------------------------------------------------- reading and recommendation
FAMILY_WORDS = {"i2i": "image search", "knn": "k-NN", "zeroshot": "zero-shot", "t2i": "text search"}


def _family_averages(reports, columns) -> dict[str, dict[str, float | None]]:
    from mcip.eval.report import averages, group_columns

    grouped = group_columns([(n, f) for n, f, *_ in columns])
    return {r.model: {f: v for f, (v, _, _) in averages(r, grouped).items()} for r in reports}


def _keeps_text(avg: dict, base: dict) -> bool:
    return all(
        avg.get(f) is not None and (base.get(f) is None or avg[f] >= base[f] - GUARD_TEXT_SLACK)
        for f in ("zeroshot", "t2i")
        if f in base
    )


def recommend(reports, columns) -> str:
    """The row to deploy: among the rows with every column measured whose zero-shot and text search each
    stay within :data:`GUARD_TEXT_SLACK` points of the starting model, the best image search (I2I); the
    starting model itself when no fine-tuned row keeps the text side."""
    avgs = _family_averages(reports, columns)
    base = avgs[reports[0].model]
    complete = [r.model for r in reports if not r.missing]
    keeping = [m for m in complete if _keeps_text(avgs[m], base)] or [reports[0].model]
    return max(keeping, key=lambda m: (avgs[m].get("i2i") or float("-inf"), m == reports[0].model))


def fit_reading(
    reports, pairs, recommended: str, data: FitData | None = None, out: Path | None = None
) -> str:
    """Markdown: each row against the starting model in plain words, and the recommended model."""
    if not reports:
        return "No results."
    columns = [(n, f) for n, f in pairs]
    avgs = _family_averages(reports, columns)
    base_name = reports[0].model
    base = avgs[base_name]
    families = [f for f in ("i2i", "knn", "zeroshot", "t2i") if f in base]

    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    def delta(v, b):
        return "n/a" if v is None or b is None else f"{v - b:+.1f}"

    lines = ["# Reading the fit", ""]
    if data is not None:
        lines += [data.summary() + ".", ""]
    lines += [f"Changes against the starting model (**{base_name}**), family averages in points:", ""]
    header = ["row", *(FAMILY_WORDS[f] for f in families), "AVG"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in reports:
        a = avgs[r.model]
        cells = [
            fmt(a.get(f)) if r.model == base_name else f"{fmt(a.get(f))} ({delta(a.get(f), base.get(f))})"
            for f in [*families, "AVG"]
        ]
        lines.append("| " + " | ".join([r.model, *cells]) + " |")
    lines += [""]
    for r in reports[1:]:
        a = avgs[r.model]
        parts = [f"{FAMILY_WORDS[f]} {delta(a.get(f), base.get(f))}" for f in families]
        verdict = "keeps the text side" if _keeps_text(a, base) else "pays for it on the text side"
        lines.append(f"- **{r.model}**: " + ", ".join(parts) + f" ({verdict})")
    rec = avgs[recommended]
    if recommended == base_name:
        best_i2i = max(avgs, key=lambda m: avgs[m].get("i2i") or float("-inf"))
        lines += [
            "",
            f"**Recommended model: {base_name}** (the starting model): no fine-tuned row improved image "
            f"search while keeping zero-shot and text search within {GUARD_TEXT_SLACK} points. If only image "
            f"search matters, {best_i2i} has the best image search ({fmt(avgs[best_i2i].get('i2i'))}).",
        ]
    else:
        lines += [
            "",
            f"**Recommended model: {recommended}**: image search {delta(rec.get('i2i'), base.get('i2i'))}, "
            f"zero-shot {delta(rec.get('zeroshot'), base.get('zeroshot'))}, text search "
            f"{delta(rec.get('t2i'), base.get('t2i'))} (the best image search among the rows whose zero-shot "
            f"and text search stay within {GUARD_TEXT_SLACK} points of the starting model).",
        ]
    if data is not None and not data.val_on_seen:
        lines += ["", "Validation was on classes never trained on (the --val shares no class with --data)."]
    if data is not None and data.test_source.startswith("the val"):
        lines += [
            "",
            "The report is on the val images, which also chose the checkpoints and the WiSE-FT alpha: pass "
            "--test with images used for nothing else for numbers you can trust.",
        ]
    if out is not None:
        lines += ["", "Search with the recommended model:", "", "```bash", serve_command(out), "```"]
    notes = [n for r in reports for n in r.notes]
    if notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in dict.fromkeys(notes))]
    return "\n".join(lines)


def serve_command(out: Path) -> str:
    return f"mcip serve --index {Path(out) / 'index'}"


# ---------------------------------------------------------------------- the plan (--dry-run)
@dataclass
class FitPlan:
    text: str
    estimate_seconds: float | None


def _warmup_seconds(model_spec: str, records, batch_size: int) -> tuple[float, float]:
    """(seconds per training step at ``batch_size``, seconds per image encoded), measured on a few real
    train images: two forward + backward passes of the image tower after one untimed pass, scaled linearly
    from the measured batch (at most 8 images) to ``batch_size``."""
    import torch

    from mcip.data.dataset import decode_image
    from mcip.models import load_model

    model = load_model(model_spec)
    transform = model.train_transform
    images = []
    for r in records[:32]:
        decoded = decode_image(r.path, transform, str(r.path))
        if not isinstance(decoded, str):
            images.append(decoded)
        if len(images) == 8:
            break
    if not images:
        raise InputError("None of the first 32 training images decodes; check the files.")
    pixels = torch.stack(images).to(model.device)
    model.train()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        loss = model.encode_image(pixels).sum()
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    step = sum(times[1:]) / 2 * batch_size / len(images)
    model.eval()
    with torch.inference_mode():
        start = time.perf_counter()
        model.encode_image(pixels)
        per_image = (time.perf_counter() - start) / len(images)
    return step, per_image


def plan_fit(out: Path, s: FitSettings, measure: bool = True) -> FitPlan:
    """What ``mcip fit`` would do with ``s``: the data (checked), the rows, steps per stage, a time estimate
    from a measured warm-up (``measure``) and the files it writes. Trains nothing, writes nothing."""
    s = s.validate()
    d = read_fit_data(s)
    rows = select_rows(s.all_rows, s.method)
    n = len(d.train)
    image_steps = math.ceil(n / s.batch_size) * s.stage_epochs
    if s.max_steps:
        image_steps = min(image_steps, s.max_steps)
    image_stages = sum(r.method in ("gpr", "gpr_no_proj", "mcip") for r in rows)
    realigns = sum(r.method in ("sft", "mcip_rea", "guarded") for r in rows)
    lines = [
        f"mcip fit --dry-run: {s.model}, method {s.method}, into {out}",
        "",
        f"Data: {d.summary()}.",
        f"Class names: {'--names ' + s.names if s.names else 'the labels themselves'}; "
        f"captions per train image: its own + {s.templates_per_image} templates"
        + (f" + up to {s.caption_top_k} retrieved from --pool {s.pool}" if s.pool else ""),
        "",
        "Rows:",
        *(f"  - {r.name}: {r.description}" for r in rows),
        "",
        f"Image stages: {image_stages} x {image_steps} steps (batch {s.batch_size}, {s.stage_epochs} "
        f"epoch(s)); Re-A: {realigns} stage(s), each until val stops improving for {s.realign_patience} "
        f"epochs (at most {s.realign_epochs}); the guarded row's WiSE-FT evaluates {len(s.wise_grid)} "
        "alphas on val.",
        "Evaluation on "
        + d.test_source
        + ": image search (I2I mAP), "
        + ("k-NN (train images vote), " if d.knn else "")
        + "zero-shot over the class names, text search (T2I R@5, class names and captions as queries)"
        + ("" if d.knn else "; k-NN is left out: some test classes have no train image"),
    ]
    estimate = None
    if measure:
        step, per_image = _warmup_seconds(s.model, d.train, s.batch_size)
        encode = per_image * (
            len(d.val) * (image_stages * 2 + realigns + len(s.wise_grid))  # validations (rough)
            + (len(d.test) + len(d.train)) * len(rows)  # evaluation (k-NN encodes train too)
        )
        estimate = image_stages * image_steps * step + encode
        lines += [
            "",
            f"Time: about {estimate / 60:.0f} min on this machine before Re-A (measured warm-up: "
            f"{step:.2f} s per image step, {per_image * 1000:.1f} ms per image encoded; Re-A steps are "
            "cheaper: the text tower's frozen blocks are cached).",
        ]
    lines += [
        "",
        "Writes:",
        f"  {out}/data/ (split manifests, names.tsv), {out}/captions/, {out}/runs/<row>/model,",
        f"  {out}/results/ (table1.md, results.json, table1.csv, teaser.png, reading.md, search.md, run.json),",
        f"  {out}/index/ (the test images, recommended model) -> {serve_command(out)}",
    ]
    return FitPlan("\n".join(lines), estimate)


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
