"""``mcip train``: a training stage or pipeline from a YAML config (shipped, a file, or ``--set`` only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    from mcip.stages.resolve import load_config, shipped_configs
    from mcip.stages.run import run

    if args.list_configs:
        for name, path in sorted(shipped_configs().items()):
            print(f"{name:<36} {path}")
        return 0
    if not args.config and not args.set:
        print(
            "mcip train: give a config file, a shipped config name (see --list-configs) or --set stage=...",
            file=sys.stderr,
        )
        return 2
    from mcip.engine.preempt import TrainingInterrupted

    raw = load_config(args.config, args.set)
    try:
        results = run(raw, resume=args.resume, progress=not args.quiet)
    except TrainingInterrupted as exc:  # SIGTERM / SIGUSR1 / Ctrl-C: checkpointed; run_command reports it
        exc.resume_command = f"mcip train {Path(str(raw.get('out', 'OUT'))) / 'config.yaml'} --resume"
        raise
    _print_results(results)
    return 0


def _print_results(results) -> None:
    print("\nstage        steps   time      best validation         model")
    for r in results:
        if r.train is None:
            print(f"{r.stage:<12} (already complete, reused)               {r.model_dir}")
            continue
        t = r.train
        best = f"{t.best_metric:.2f} @ step {t.best_step}" if t.best_metric is not None else "n/a"
        if r.stage == "wise":  # a merge, no steps: the alpha (and its val value)
            value = f" ({t.best_metric:.2f})" if t.best_metric is not None else ""
            best = f"alpha {t.final_metrics['alpha']:g}{value}"
        print(f"{r.stage:<12} {t.steps:>5} {t.seconds:>7.1f} s   {best:<22}  {r.model_dir}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run a training stage (gpr, realign, mcip, align) or a pipeline (2sft, mcip+rea, mcip+wise+rea, ...)",
    )
    p.add_argument(
        "config",
        nargs="?",
        help="YAML config file or shipped config name (see --list-configs); optional with --set",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-5 --set data.train=train.csv",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint in the run folder (mid-epoch)",
    )
    p.add_argument("--list-configs", action="store_true", help="list the shipped configs and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
