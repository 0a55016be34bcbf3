"""Sweeps of the MCIP stage's loss settings on the lab's val split (the evidence behind the lab's choice of
the hard-caption weight h, the multi-caption weight and the drift regulariser; nothing here sees the test
split).

Each variant trains the lab's MCIP stage from the same base model and pseudo-captions with one setting
changed (``loss.hard_caption_weight``, ``loss.mc_weight`` with ``arc_weight = 1 - mc_weight``,
``loss.distill_weight``), selected on val I2I as the lab's MCIP row is, and reports the val numbers of the
starting model and of the selected checkpoint: I2I mAP, T2I R@5 and ``combined`` (their mean, each relative
to the starting model: see ``mcip.engine.validate``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from mcip.experiment.lab import LabRun
from mcip.losses.mcip import convex_weights

SETTINGS = {"h": "loss.hard_caption_weight", "mc": "loss.mc_weight", "distill": "loss.distill_weight"}


def variant_name(variant: Mapping[str, float]) -> str:
    return "-".join(f"{k}{v:g}" for k, v in variant.items())


def _values(lab: LabRun, variant: Mapping[str, float]) -> dict:
    values = lab.mcip_values()
    for key, value in variant.items():
        values[SETTINGS[key]] = value
        if key == "mc":
            values |= {f"loss.{k}": v for k, v in convex_weights(value).items()}
    return values


def _is_the_lab_setting(lab: LabRun, variant: Mapping[str, float]) -> bool:
    now = {"h": lab.s.hard_caption_weight, "mc": lab.s.mc_weight, "distill": 0.0}
    return all(now[k] == v for k, v in variant.items())


def sweep_mcip(lab: LabRun, variants: Sequence[Mapping[str, float]]) -> list[dict]:
    """Train the MCIP stage once per variant (a finished one is reused) and return, per variant, the val
    numbers of the start and of the selected checkpoint (see the module docstring)."""
    lab.data = lab.prepare_data()
    base = lab.base_model()
    captions = lab.captions(base)
    lab.start_rows(base, captions)
    rows = []
    for variant in variants:
        unknown = sorted(set(variant) - set(SETTINGS))
        if unknown:
            raise ValueError(f"Unknown sweep setting(s) {unknown}; use {', '.join(SETTINGS)}.")
        if _is_the_lab_setting(lab, variant):  # the MCIP row itself: reuse it (a run is deterministic)
            model = lab.model_of("mcip")
        else:
            name = f"sweep-{variant_name(variant)}"
            model = lab.stage_model("mcip+rea", "mcip", base, name, _values(lab, variant))
        extra = json.loads((Path(model) / "mcip_model.json").read_text())["extra"]
        chosen = _val_at(Path(model).parent / "metrics.jsonl", extra["best_step"])
        rows.append(
            {
                **variant,
                "best_step": extra["best_step"],
                "start": {k: extra["start_metrics"][k] for k in ("i2i_map", "t2i_r5", "combined")},
                "selected": chosen,
            }
        )
    return rows


def _val_at(metrics: Path, step: int | None) -> dict:
    """The val record of ``step`` (the last one when no checkpoint was selected)."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if '"val/' in line]
    chosen = next((r for r in records if r["step"] == step), records[-1])
    return {k: chosen[f"val/{k}"] for k in ("i2i_map", "t2i_r5", "combined")}


def format_sweep(rows: Sequence[dict]) -> str:
    """A Markdown table: one row per variant, the start and the selected checkpoint on val."""
    keys = [k for k in SETTINGS if any(k in r for r in rows)]
    head = ["| " + " | ".join([*keys, "step", "val I2I mAP", "val T2I R@5", "val combined"]) + " |"]
    head.append("|" + "---|" * (len(keys) + 4))
    lines = []
    for r in rows:
        s, c = r["start"], r["selected"]
        lines.append(
            "| "
            + " | ".join(
                [
                    *(f"{r[k]:g}" if k in r else "" for k in keys),
                    str(r["best_step"]),
                    f"{s['i2i_map']:.1f} -> {c['i2i_map']:.1f}",
                    f"{s['t2i_r5']:.1f} -> {c['t2i_r5']:.1f}",
                    f"{c['combined']:.3f}",
                ]
            )
            + " |"
        )
    return "\n".join(head + lines)
