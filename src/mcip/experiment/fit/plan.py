"""``mcip fit --dry-run``: the plan of a run (data, rows, steps, a measured time estimate, what is written)."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from mcip.errors import InputError
from mcip.experiment.fit.data import read_fit_data
from mcip.experiment.fit.report import serve_command
from mcip.experiment.fit.settings import FitSettings
from mcip.experiment.rows import select_rows


@dataclass
class FitPlan:
    text: str
    estimate_seconds: float | None
    estimate_range: tuple[float, float] | None = None  # (low, high) seconds


WARM_STEPS = 5  # timed training steps; the first two (allocation, autotuning, caches) are not counted
SKIPPED_STEPS = 2


@dataclass
class Costs:
    """Measured on a few real train images (steady state: the first steps are not counted)."""

    step: float  # seconds per image-stage training step at the run's batch size
    image: float  # seconds per image encoded (eval mode)
    text: float  # seconds per caption/prompt encoded by the whole text tower (eval mode)
    text_step: float  # seconds per Re-A step of 256 captions (the whole text tower forward + backward)


def _timed(fn, repeats: int, skip: int) -> float:
    """The median of ``repeats`` timings of ``fn()`` after ``skip`` untimed calls."""
    for _ in range(skip):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_costs(model_spec: str, records, batch_size: int, names: list[str]) -> Costs:
    """Time the parts of a fit on ``records``' first decodable images (at most 16) and the class names:
    a training step of the image tower (forward + backward), encoding images, encoding texts, and a text
    tower step; medians of steady-state repeats, scaled linearly to the run's batch sizes."""
    import torch

    from mcip.data.dataset import decode_image
    from mcip.models import load_model

    model = load_model(model_spec)
    images = []
    for r in records[:64]:
        decoded = decode_image(r.path, model.train_transform, str(r.path))
        if not isinstance(decoded, str):
            images.append(decoded)
        if len(images) == 16:
            break
    if not images:
        raise InputError("None of the first 64 training images decodes; check the files.")
    pixels = torch.stack(images).to(model.device)
    texts = [f"a photo of a {n}." for n in (names or ["thing"])][:32] * 2
    model.train()

    def image_step():
        model.encode_image(pixels).sum().backward()
        model.zero_grad(set_to_none=True)

    def text_step():
        model.encode_text(texts).sum().backward()
        model.zero_grad(set_to_none=True)

    step = _timed(image_step, WARM_STEPS - SKIPPED_STEPS, SKIPPED_STEPS) * batch_size / len(images)
    text_step_s = _timed(text_step, 2, 1) * 256 / len(texts)
    model.eval()
    with torch.inference_mode():
        image = _timed(lambda: model.encode_image(pixels), 3, 1) / len(images)
        text = _timed(lambda: model.encode_text(texts), 3, 1) / len(texts)
    return Costs(step, image, text, text_step_s)


def estimate_seconds(s: FitSettings, d, rows, c: Costs, pool_texts: int = 0) -> tuple[float, float, float]:
    """(expected, low, high) seconds of the run: the search's trials (quick: the first runs until early
    stopping, the others stop at the pruner's first rung; low: every trial at its earliest stop; high:
    every trial to its last epoch), the other rows' stages, Re-A, WiSE-FT, captions and evaluation."""
    from mcip.engine.validate import MAX_GALLERY
    from mcip.experiment.fit.search import QUICK, resolve_mode

    mode = resolve_mode(s.search)
    lengths = QUICK if mode in ("quick", "off") else {"max_epochs": 10, "patience": 3}
    n, n_val, n_test = len(d.train), len(d.val), 0 if d.test is d.val else len(d.test)
    gallery = min(n, MAX_GALLERY) if d.val_on_seen else 0
    validation = c.image * (n_val + gallery) + c.text * n_val * 3  # both sides
    epoch = math.ceil(n / s.batch_size) * c.step + validation
    if s.max_steps:
        epoch = min(s.max_steps, math.ceil(n / s.batch_size)) * c.step + validation
    fixed = s.stage_epochs
    first = fixed or min(lengths["max_epochs"], lengths["patience"] + 3)
    first_low, first_high = fixed or lengths["patience"] + 1, fixed or lengths["max_epochs"]
    image_stages = [r.method for r in rows if r.method in ("gpr", "gpr_no_proj", "mcip")]
    grid = 1 if (s.lr is not None or mode == "off") else (s.trials or 4)
    policies = 2 if s.pool else 1
    expected = low = high = 0.0
    for i, stage in enumerate(image_stages):
        trials = grid if i == 0 else 1  # quick: the rate is searched once
        extra = policies - 1 if stage == "mcip" and mode != "off" else 0
        expected += epoch * (first + (trials - 1) * 1.5 + extra * first)
        low += epoch * (first_low + (trials - 1) + extra)
        high += epoch * first_high * (trials + extra)
    captions_per_epoch = n * (s.templates_per_image + 2)
    rea_epoch = math.ceil(captions_per_epoch / 256) * c.text_step * 0.5 + validation  # lower blocks cached
    realigns = sum(r.method in ("sft", "mcip_rea", "guarded") for r in rows)
    rea_grid = 1 if (s.realign_lr is not None or mode == "off") else min(s.trials or 2, 2)
    p = s.realign_patience
    expected += rea_epoch * ((p + 3) * realigns + (rea_grid - 1) * 1.5)
    low += rea_epoch * ((p + 1) * realigns + (rea_grid - 1))
    high += rea_epoch * (s.realign_epochs * (realigns + rea_grid - 1))
    names = len(d.names)
    # WiSE-FT merges the image side only: its val zero-shot prompts are the base text tower's (encoded once)
    wise = (
        len(s.wise_grid) * validation + c.text * names * 80 if any(r.method == "guarded" for r in rows) else 0
    )
    captions = c.image * n + c.text * pool_texts
    towers = sum(r.method in ("baseline", "sft", "mcip_rea", "guarded") for r in rows)
    # every row encodes val, test and (k-NN) train images once; the prompts once per distinct text tower
    # (cached across val and test, and across the rows that share a text tower)
    evaluation = len(rows) * c.image * (n_val + n_test + (n if d.knn else 0)) + towers * c.text * names * 80
    common = wise + captions + evaluation
    return expected + common, low + common, high + common


def plan_fit(out: Path, s: FitSettings, measure: bool = True) -> FitPlan:
    """What ``mcip fit`` would do with ``s``: the data (checked), the rows, steps per stage, a time estimate
    from a measured warm-up (``measure``) and the files it writes. Trains nothing, writes nothing."""
    s = s.validate()
    d = read_fit_data(s)
    rows = select_rows(s.all_rows, s.method)
    from mcip.experiment.fit.search import resolve_mode

    steps_per_epoch = math.ceil(len(d.train) / s.batch_size)
    if s.max_steps:
        steps_per_epoch = min(steps_per_epoch, s.max_steps)
    image_stages = sum(r.method in ("gpr", "gpr_no_proj", "mcip") for r in rows)
    realigns = sum(r.method in ("sft", "mcip_rea", "guarded") for r in rows)
    length = f"{s.stage_epochs} epoch(s)" if s.stage_epochs else "until val stops improving"
    recipe = _recipe_text(s, resolve_mode(s.search))
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
        f"Recipe: {recipe}.",
        f"Image stages: {image_stages}, {steps_per_epoch} steps an epoch (batch {s.batch_size}), {length}; "
        f"Re-A: {realigns} stage(s), each until val stops improving for {s.realign_patience} "
        f"epochs (at most {s.realign_epochs}); the guarded row's WiSE-FT evaluates {len(s.wise_grid)} "
        "alphas on val.",
        "Evaluation on "
        + d.test_source
        + ": image search (I2I mAP), "
        + ("k-NN (train images vote), " if d.knn else "")
        + "zero-shot over the class names, text search (T2I R@5, class names and captions as queries)"
        + ("" if d.knn else "; k-NN is left out: some test classes have no train image"),
    ]
    estimate = span = None
    if measure:
        estimate, span, time_lines = _time_estimate(s, d, rows)
        lines += time_lines
    lines += [
        "",
        "Writes:",
        f"  {out}/data/ (split manifests, names.tsv), {out}/captions/, {out}/runs/<row>/model,",
        f"  {out}/results/ (table1.md, results.json, table1.csv, teaser.png, reading.md, search.md, run.json),",
        f"  {out}/index/ (the test images, recommended model) -> {serve_command(out)}",
    ]
    return FitPlan("\n".join(lines), estimate, span)


def _recipe_text(s: FitSettings, mode: str) -> str:
    """How the plan says the recipe is chosen (search ``mode``, or the configs' settings)."""
    if mode == "off":
        return "the configs' settings (--search off)"
    return (
        f"searched on val ({mode}: "
        + (
            "--lr given"
            if s.lr is not None
            else "learning rates 1e-4, 3e-4, 3e-5, 1e-5 with successive halving"
        )
        + (", caption policy with/without retrieved captions" if s.pool else "")
        + ("" if s.realign_lr is not None else "; Re-A's rate 1e-4, 1e-5")
        + (f"; budget {s.budget_min:g} min" if s.budget_min else "")
        + "); the best trial's model is the row's"
    )


def _time_estimate(s: FitSettings, d, rows) -> tuple[float, tuple[float, float], list[str]]:
    """From a measured warm-up: (estimate, (low, high)) in seconds and the plan's lines saying so."""
    pool_texts = 0
    if s.pool:
        from mcip.captions.retrieve import load_pool

        pool_texts = len(load_pool(s.pool, None)[0])
    costs = measure_costs(s.model, d.train, s.batch_size, sorted(d.names.values()))
    estimate, low, high = estimate_seconds(s, d, rows, costs, pool_texts)
    lines = [
        "",
        f"Time: about {estimate / 60:.0f} min on this machine (between {low / 60:.0f} and {high / 60:.0f} "
        "min: early stopping and the pruner decide how long each trial trains). Measured here: "
        f"{costs.step:.2f} s per image step (batch {s.batch_size}), {costs.image * 1000:.1f} ms per image "
        f"and {costs.text * 1000:.1f} ms per text encoded.",
    ]
    return estimate, (low, high), lines
