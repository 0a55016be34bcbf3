"""``mcip lab {prepare,run}``: the offline lab on real emoji data and real small encoders."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from mcip.cli._common import print_run_result


def default_lab_root() -> Path:
    """``$MCIP_LAB_DIR``, else ``~/.cache/mcip/lab``."""
    env = os.environ.get("MCIP_LAB_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mcip" / "lab"


def cmd_lab_prepare(args: argparse.Namespace) -> int:
    from mcip.lab import prepare_lab

    data = prepare_lab(
        Path(args.root) if args.root else default_lab_root(),
        npm=args.npm,
        force=args.force,
        progress=not args.quiet,
    )
    if args.quiet:
        print(data)
    return 0


def cmd_lab_run(args: argparse.Namespace) -> int:
    from mcip.experiment.lab import FULL, QUICK, run_lab

    settings = QUICK if args.quick else FULL
    if args.hard_caption_weight is not None:
        settings = dataclasses.replace(settings, hard_caption_weight=args.hard_caption_weight)
    if args.mc_weight is not None:
        settings = dataclasses.replace(settings, mc_weight=args.mc_weight)
    if args.all_rows:
        settings = dataclasses.replace(settings, all_rows=True)
    result = run_lab(
        Path(args.root) if args.root else default_lab_root(),
        args.out,
        settings=settings,
        force=args.force,
        progress=not args.quiet,
    )
    print_run_result(result, "mcip lab run")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="the offline lab: real emoji data and encoders on a CPU")
    lsub = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    q = lsub.add_parser(
        "prepare",
        help="fetch the emoji packages with npm (pinned versions), composite, split, write the manifest",
    )
    q.add_argument("--root", help="data folder (default: $MCIP_LAB_DIR or ~/.cache/mcip/lab)")
    q.add_argument("--npm", default="npm", help="the npm executable")
    q.add_argument("--force", action="store_true", help="delete what an earlier run wrote and start over")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_lab_prepare)
    _register_run(lsub)


def _register_run(lsub: argparse._SubParsersAction) -> None:
    q = lsub.add_parser(
        "run",
        help="align the base model, fine-tune the paper's rows (GPR-FT, 2SFT, MCIP, MCIP+Re-A) and the "
        "guarded row, evaluate on unseen emoji, write the Table-1-style report",
    )
    q.add_argument(
        "--root",
        help="lab data folder (default: $MCIP_LAB_DIR or ~/.cache/mcip/lab); prepared first when empty",
    )
    q.add_argument("--out", default="lab-results", help="output folder (default: ./lab-results)")
    q.add_argument("--quick", action="store_true", help="a quarter of the emoji and few steps (< 5 min)")
    q.add_argument("--force", action="store_true", help="delete OUT first (the cached base model is kept)")
    q.add_argument(
        "--hard-caption-weight",
        type=float,
        help="MCArcMargin's hardest-caption term h (default 0: chosen on val by examples/lab_sweep.py; "
        "the authors' value is 0.1)",
    )
    q.add_argument(
        "--mc-weight",
        type=float,
        help="MCIP's multi-caption loss weight (ArcMargin gets 1 - it; default 0.5: chosen on val by "
        "examples/lab_sweep.py; the authors' value is 0.25)",
    )
    q.add_argument(
        "--all-rows",
        action="store_true",
        help="also the GPR-FT row without projector (ICMR'23; its text columns are n/a)",
    )
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_lab_run)
