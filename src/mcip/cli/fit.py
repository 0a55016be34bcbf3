"""``mcip fit``: the lab's experiment (captions, fine-tuned rows, guarded row, report, index) on your own
labelled images."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcip.cli._common import print_run_result


def _settings(args: argparse.Namespace):
    from mcip.errors import ConfigError
    from mcip.experiment.fit import FitSettings

    values = {
        "data": args.data,
        "model": args.model,
        "method": args.method,
        "val": args.val,
        "test": args.test,
        "names": args.names,
        "pool": args.pool,
        "val_fraction": args.val_fraction,
        "templates_per_image": args.templates_per_image,
        "stage_epochs": args.epochs,
        "realign_epochs": args.realign_epochs,
        "realign_patience": args.patience,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "num_workers": args.workers,
        "caption_top_k": args.top_k,
        "caption_min_sim": args.min_sim,
        "all_rows": args.all_rows,
        "stage_overrides": tuple(args.set or ()),
        "seed": args.seed,
        "lr": args.lr,
        "realign_lr": args.realign_lr,
        "mc_weight": args.mc_weight,
        "hard_caption_weight": args.hard_caption_weight,
        "search": args.search,
        "trials": args.trials,
        "budget_min": args.budget_min,
    }
    if args.wise_grid:
        try:
            values["wise_grid"] = tuple(float(a) for a in args.wise_grid.split(","))
        except ValueError:
            raise ConfigError(
                f"--wise-grid {args.wise_grid!r}: expected alphas in [0, 1] separated by commas, e.g. 0,0.5,1."
            ) from None
    return FitSettings(**values).validate()


def cmd_fit(args: argparse.Namespace) -> int:
    from mcip.experiment.fit import plan_fit, run_fit
    from mcip.experiment.fit.report import serve_command

    settings = _settings(args)
    if args.dry_run:
        print(plan_fit(Path(args.out), settings, measure=not args.no_warmup).text)
        return 0
    result = run_fit(args.out, settings, force=args.force, progress=not args.quiet)
    print_run_result(result, "mcip fit")
    print(f"recommended model: {result.recommended} ({result.models[result.recommended]})")
    print(f"search it: {serve_command(result.out)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fine-tune on your own labelled images: the recipe searched on val, captions, MCIP/2SFT rows "
        "and the guarded row, a report against the starting model, and a search index with the "
        "recommended model",
        description="The lab's experiment on your data. Manifests are .csv/.jsonl/.parquet with 'path' and "
        "'label' columns (optional 'captions', e.g. a description per image). Every choice (the learning "
        "rates, the caption policy, how long each stage trains, checkpoints, the WiSE-FT alpha, when Re-A "
        "stops, the recommended row) is made on the val images; the test images are read once, after every "
        "choice. An interrupted run (search included) continues when started again with the same arguments.",
    )
    p.add_argument("--data", required=True, help="training manifest (path, label[, captions])")
    p.add_argument(
        "--model",
        required=True,
        help="starting model: openclip:ARCH/PRETRAINED, hf:REPO, composed:..., or an mcip model folder",
    )
    p.add_argument(
        "--out", required=True, help="output folder (refused when it holds a run with other settings)"
    )
    p.add_argument(
        "--method",
        choices=("mcip+rea", "2sft", "both"),
        default="mcip+rea",
        help="the rows to train: MCIP, MCIP+Re-A and the guarded row; GPR-FT and 2SFT; or both "
        "(default mcip+rea)",
    )
    p.add_argument(
        "--val",
        help="validation manifest (default: --val-fraction of each class's images held out: seen classes)",
    )
    p.add_argument("--test", help="test manifest for the report (default: the val images, with a warning)")
    p.add_argument("--names", help="class names: 'label<TAB>name' lines (default: the labels themselves)")
    p.add_argument("--pool", help="texts (one per line) to retrieve pseudo-captions from, besides templates")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held out per class without --val (0.1)")
    p.add_argument(
        "--templates-per-image", type=int, default=5, help="class-name template captions per image (5)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="a fixed number of epochs for each image stage (default: until val stops improving, at most "
        "6 epochs in the quick search, 10 in the full one)",
    )
    p.add_argument(
        "--realign-epochs", type=int, default=30, help="upper bound on Re-A epochs (it stops on val; 30)"
    )
    p.add_argument("--patience", type=int, default=3, help="Re-A validations without a new best (3)")
    p.add_argument("--max-steps", type=int, help="cap on steps per image stage (a quick look)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of the image stages (64)")
    p.add_argument("--workers", type=int, default=4, help="data-loader workers (4)")
    p.add_argument("--top-k", type=int, default=10, help="captions retrieved per image from --pool (10)")
    p.add_argument("--min-sim", type=float, default=0.2, help="least cosine of a retrieved caption (0.2)")
    p.add_argument("--wise-grid", help="WiSE-FT alphas tried on val, comma-separated (default 0,0.125,...,1)")
    p.add_argument("--all-rows", action="store_true", help="also GPR-FT without projector (with 2sft)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a stage setting of the fit-2sft / fit-mcip+rea configs (e.g. loss.margin=0.2); it "
        "wins over anything mcip fit sets; repeatable",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the val hold-out and the search (0)")
    r = p.add_argument_group(
        "recipe",
        "what the image stages and Re-A train with. By default a search on val chooses (the learning rates, "
        "each stage's length, MCIP's caption policy; in the full search also mc_weight and "
        "hard_caption_weight); a value given here, or with --set on the same key, is used as given and not "
        "searched",
    )
    r.add_argument(
        "--search",
        choices=("auto", "quick", "full", "off"),
        default="auto",
        help="auto (default): quick on a CPU, full with a GPU; quick: the rates 1e-4, 3e-4, 3e-5, 1e-5 with "
        "successive halving (and Re-A's 1e-4, 1e-5); full: that grid, then TPE; off: the configs' values",
    )
    r.add_argument("--trials", type=int, help="trials per study (default: the mode's)")
    r.add_argument(
        "--budget-min", type=float, help="wall-clock minutes for the whole search (started trials finish)"
    )
    r.add_argument("--lr", type=float, help="the image stages' learning rate (not searched)")
    r.add_argument("--realign-lr", type=float, help="Re-A's learning rate (not searched)")
    r.add_argument(
        "--mc-weight", type=float, help="MCIP: weight of the multi-caption loss (ArcMargin: 1 - it)"
    )
    r.add_argument(
        "--hard-caption-weight", type=float, help="MCIP: weight h of the hardest-caption term (0 disables)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="check the inputs and print the plan; train nothing"
    )
    p.add_argument("--no-warmup", action="store_true", help="with --dry-run: no measured time estimate")
    p.add_argument("--force", action="store_true", help="delete OUT first and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_fit)
