"""``mcip merge``: WiSE-FT weight-space ensembling of a start and a fine-tuned model."""

from __future__ import annotations

import argparse
import sys

from mcip.cli._common import add_device_arg


def cmd_merge(args: argparse.Namespace) -> int:
    from mcip.data import load_records
    from mcip.wise.merge import format_summary, wise_merge
    from mcip.wise.select import parse_alpha, parse_grid

    alpha = parse_alpha(args.alpha)
    if alpha == "auto" and not args.val:  # before any model is loaded
        print(
            "mcip merge: error: --alpha auto chooses alpha on validation data; give --val VAL_MANIFEST "
            "(held-out classes; a captions column adds T2I) or a number, e.g. --alpha 0.5",
            file=sys.stderr,
        )
        return 2
    result = wise_merge(
        args.start,
        args.finetuned,
        args.out,
        alpha,
        val=load_records(args.val, args.data_root) if args.val else None,
        grid=parse_grid(args.grid),
        select=args.select,
        parts=[p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None,
        names=args.names,
        batch_size=args.batch_size,
        tolerance=args.tolerance,
        guard=args.guard,
        device=args.device,
        start_drop_projector=args.drop_projector,
        progress=not args.quiet,
    )
    print(format_summary(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="WiSE-FT: (1 - A) * START + A * FINETUNED, A given or chosen on val (keeps the text side)",
        description="Weight-space ensembling (Wortsman et al., CVPR 2022): every floating tensor that "
        "differs between START and FINETUNED (BatchNorm statistics included) becomes (1 - A) * START + "
        "A * FINETUNED; A = 0 is START, A = 1 is FINETUNED, bitwise. With --alpha auto each A of --grid "
        "is validated on --val (val I2I mAP, T2I R@k where val has captions, zero-shot top-1 with "
        "--names) and --select picks A; DIR gets the merged model plus wise_curve.json and "
        "wise_curve.png (val I2I mAP vs val T2I R@5, one point per A). --alpha auto needs --val; a "
        "fixed --alpha with --val reports val at 0, A and 1. DIR's mcip_model.json records START, "
        "FINETUNED, A and the merged parts.",
    )
    p.add_argument(
        "start", metavar="START", help="the model FINETUNED was trained from (spec or mcip model dir)"
    )
    p.add_argument("finetuned", metavar="FINETUNED", help="the fine-tuned mcip model directory (or spec)")
    p.add_argument(
        "--alpha",
        required=True,
        help="A in [0, 1] (0 = START, 1 = FINETUNED), or 'auto': the --grid value --select picks on --val",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output mcip model directory (replaced atomically)"
    )
    p.add_argument(
        "--parts",
        help="comma-separated parts to merge (e.g. image_encoder,image_projector); others are FINETUNED's "
        "(default: every part that differs)",
    )
    _add_validation_args(p)
    add_device_arg(p)
    p.add_argument(
        "--drop-projector",
        action="store_true",
        help="drop START's image projector (when FINETUNED was trained with model.drop_projector)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-alpha progress lines")
    p.set_defaults(func=cmd_merge)


def _add_validation_args(p: argparse.ArgumentParser) -> None:
    """``--val`` and how A is chosen on it."""
    p.add_argument(
        "--val", metavar="VAL_MANIFEST", help="validation manifest or image folder (held-out classes)"
    )
    p.add_argument("--data-root", help="folder that relative paths in --val start from")
    p.add_argument(
        "--grid",
        default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1",
        help="alphas tried by --alpha auto (0 is always added)",
    )
    p.add_argument(
        "--select",
        default="combined",
        choices=["combined", "i2i", "t2i", "guarded"],
        help="what picks A: combined = mean of val I2I mAP and val T2I R@5, each relative to A = 0 "
        "(default); i2i = val I2I mAP; t2i = val T2I R@5; guarded = the best val I2I mAP among the A "
        "whose val T2I R@5 and val zero-shot top-1 (with --names) stay within --tolerance points of A = 0",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.5,
        help="--select guarded: points of val T2I R@5 / zero-shot top-1 an A may give up (default 0.5)",
    )
    p.add_argument(
        "--guard",
        default="t2i,zeroshot",
        help="--select guarded: the sides held, t2i and/or zeroshot (default both; 'zeroshot' when Re-A "
        "follows the merge and will re-align text search)",
    )
    p.add_argument(
        "--names",
        help="class names for val zero-shot top-1 ('a photo of a {name}.'), one 'label<TAB>name' per line "
        "(labels not listed keep their own text)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="val images encoded at a time (default 64)")
