"""``mcip fit --dry-run``: the plan of a run (data, rows, steps, a measured time estimate, what is written)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from mcip.errors import InputError
from mcip.fit.data import read_fit_data
from mcip.fit.report import serve_command
from mcip.fit.runner import select_rows
from mcip.fit.settings import FitSettings


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
