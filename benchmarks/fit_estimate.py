"""``mcip fit --dry-run``'s time estimate against the real run (issue 26: within 30%).

Makes a small product-photo catalogue from the prepared lab (``mcip.lab.catalogue``: ``--products``
products, 8 train, 2 val and 6 test photos each), prints the dry run's estimate (its expected figure and
range), then runs ``mcip fit`` with nothing but the data, names, pool and model (the defaults a new user
gets: the quick recipe search on a CPU) and times it. The model is the lab's aligned base under
``~/.cache/mcip/lab/models`` (made by ``mcip lab run``), else ``composed:lab``.

Ends with ``RESULT fit_estimate_error X target <=0.3`` (|estimate - real| / real, the dry run's expected
figure) and ``RESULT fit_real_within_range X`` (1 when the real time lies inside the printed range, else 0;
no target: a report line). Runs in a few minutes on 2 CPU cores with the default 24 products.

Usage: ``python benchmarks/fit_estimate.py [--products 24] [--lab-root DIR] [--model SPEC] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

TARGET = 0.3


def lab_base(root: Path) -> str:
    metas = sorted((root / "models").glob("base-*/**/mcip_model.json"), key=lambda p: p.stat().st_mtime)
    return str(metas[-1].parent) if metas else "composed:lab"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=24)
    parser.add_argument("--lab-root", type=Path)
    parser.add_argument("--model", help="starting model (default: the lab's aligned base)")
    parser.add_argument(
        "--keep", type=Path, help="write the catalogue and the run here (default: a temp dir)"
    )
    parser.add_argument("--trials", type=int, help="cap the search's trials (smoke tests)")
    parser.add_argument("--max-steps", type=int, help="cap steps per image stage (smoke tests)")
    args = parser.parse_args(argv)

    from mcip.experiment.fit import FitSettings, plan_fit, run_fit
    from mcip.lab.catalogue import make_photo_catalogue

    root = args.lab_root or Path(os.environ.get("MCIP_LAB_DIR") or Path.home() / ".cache" / "mcip" / "lab")
    model = args.model or lab_base(root)
    work = args.keep or Path(tempfile.mkdtemp(prefix="mcip-fit-estimate-"))
    cat = work / "catalogue"
    make_photo_catalogue(root, cat, products=args.products)
    settings = FitSettings(
        data=str(cat / "train.csv"),
        val=str(cat / "val.csv"),
        test=str(cat / "test.csv"),
        names=str(cat / "names.tsv"),
        pool=str(cat / "pool.txt"),
        model=model,
        trials=args.trials,
        max_steps=args.max_steps,
    )
    plan = plan_fit(work / "fit", settings)
    low, high = plan.estimate_range
    print(f"dry run: {plan.estimate_seconds / 60:.1f} min (range {low / 60:.1f}-{high / 60:.1f})")
    start = time.perf_counter()
    run_fit(work / "fit", settings, force=True, progress=False, log=lambda s: None)
    real = time.perf_counter() - start
    error = abs(plan.estimate_seconds - real) / real
    print(f"real run: {real / 60:.1f} min ({model}, {args.products} products)")
    print(f"RESULT fit_estimate_error {error:.2f} target <={TARGET}")
    inside = float(low <= real <= high)
    print(f"RESULT fit_real_within_range {inside:.0f}")
    return {"estimate": plan.estimate_seconds, "real": real, "error": error, "inside": inside}


if __name__ == "__main__":
    main()
