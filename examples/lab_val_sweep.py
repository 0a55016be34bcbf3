"""Val-split sweeps of the lab's MCIP settings: what the lab's defaults rest on (README, lab section).

Runs the lab's MCIP stage (``lab-mcip+rea.yaml``, the lab's data, base model and retrieved pseudo-captions
from a finished or running ``mcip lab run --out OUT``) once per setting and prints, per setting, the val
split's numbers at the checkpoint the stage selects (val I2I mAP, the paper's choice) and at the end:
I2I mAP and T2I R@5 on the 1,068 val drawings of 361 emoji never trained on. Nothing here reads the test
split.

    python examples/lab_val_sweep.py --lab-out lab-results [--settings h=0.1,mc=0.25 h=0,mc=0.25 ...]

Each setting is a comma-separated list of ``h`` (hard-caption weight), ``mc`` (multi-caption weight;
arc weight = 1 - mc) and ``distill`` (loss.distill_weight). Results go to OUT/sweeps/ (one run folder
per setting, reused when present) and OUT/sweeps/sweep.json; the last lines are machine-readable
``SWEEP <setting> val_i2i_map <v> val_t2i_r5 <v>``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mcip.lab.run import FULL, _run_stage, _stage_config
from mcip.lab.subset import write_lab_data
from mcip.train.progress import read_metrics

KEYS = {"h": "loss.hard_caption_weight", "mc": "loss.mc_weight", "distill": "loss.distill_weight"}
DEFAULT = ("h=0.1,mc=0.25", "h=0,mc=0.25", "h=0.1,mc=0.5", "h=0,mc=0.5")


def overrides(setting: str) -> list[str]:
    out = []
    for item in setting.split(","):
        key, _, value = item.partition("=")
        out.append(f"{KEYS[key.strip()]}={float(value)}")
        if key.strip() == "mc":
            out.append(f"loss.arc_weight={1 - float(value)}")
    return out


def run_setting(lab_out: Path, root: Path, setting: str, progress: bool) -> dict:
    s = FULL
    data = write_lab_data(root, lab_out / "data", s.subset)
    base = next((root / "models").glob("base-*/model"))  # the cached base model of the lab
    folder = lab_out / "sweeps" / setting.replace(",", "_").replace("=", "")
    args = [
        f"model.spec={base}",
        f"out={folder}",
        f"data.train={data['train_no_captions']}",
        f"data.captions={lab_out / 'captions' / 'retrieved.jsonl'}",
        f"data.val={data['val']}",
        f"data.batch_size={s.batch_size}",
        f"data.num_workers={s.num_workers}",
        f"cache_dir={root / 'cache'}",
        "loop.precision=fp32",
        f"loop.epochs={s.stage_epochs}",
        *overrides(setting),
    ]
    _run_stage(_stage_config("lab-mcip+rea", "mcip", args), print, setting, progress)
    vals = [r for r in read_metrics(folder / "metrics.jsonl") if "val/i2i_map" in r]
    best = max(vals, key=lambda r: r["val/i2i_map"])
    return {
        "setting": setting,
        "start": {k: vals[0].get(k) for k in ("val/i2i_map", "val/t2i_r5")},
        "selected": {k: best.get(k) for k in ("step", "val/i2i_map", "val/t2i_r5")},
        "last": {k: vals[-1].get(k) for k in ("step", "val/i2i_map", "val/t2i_r5")},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lab-out", default="lab-results", help="a `mcip lab run --out` folder (captions made)")
    p.add_argument("--root", default=str(Path.home() / ".cache" / "mcip" / "lab"), help="the lab data root")
    p.add_argument("--settings", nargs="+", default=list(DEFAULT))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    lab_out, results = Path(args.lab_out), []
    for setting in args.settings:
        results.append(run_setting(lab_out, Path(args.root), setting, not args.quiet))
    (lab_out / "sweeps" / "sweep.json").write_text(json.dumps(results, indent=2))
    print("| setting | val I2I mAP (selected) | val T2I R@5 (selected) | step |")
    print("|---|---|---|---|")
    for r in results:
        sel = r["selected"]
        print(f"| {r['setting']} | {sel['val/i2i_map']:.2f} | {sel['val/t2i_r5']:.2f} | {sel['step']} |")
    for r in results:
        sel = r["selected"]
        print(f"SWEEP {r['setting']} val_i2i_map {sel['val/i2i_map']:.3f} val_t2i_r5 {sel['val/t2i_r5']:.3f}")


if __name__ == "__main__":
    main()
