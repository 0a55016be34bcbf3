"""``mcip eval MODEL...`` (benchmarks, Table 1 layout) and ``mcip eval embeddings`` (precomputed .npy)."""

from __future__ import annotations

import argparse
import json

from mcip.cli._common import PRECISIONS, CommandParser


def cmd_eval(args: argparse.Namespace) -> int:
    from mcip import evaluate

    result = evaluate(
        args.models,
        args.benchmarks,
        args.data_root,
        args.out,
        cache_dir=args.cache_dir,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        skip_missing=args.skip_missing,
    )
    print("\n" + result.table)
    for r in result.reports:
        images = sum(res.images for res in r.results.values())
        bad = sum(res.unreadable for res in r.results.values())
        print(
            f"{r.model}: {len(r.results)} benchmark(s), {images} images ({bad} unreadable) in {r.seconds:.1f} s"
            + (f"; absent: {', '.join(r.missing)}" if r.missing else "")
        )
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
    if "plot" not in result.files:
        print(
            "(no teaser plot: it needs I2I and T2I or zero-shot columns, and matplotlib: pip install 'mcip[plot]')"
        )
    return 0


def cmd_eval_embeddings(args: argparse.Namespace) -> int:
    from mcip.eval.embeddings import evaluate_embeddings, load_array, load_gnd

    def opt(path, loader=load_array):
        return loader(path) if path else None

    metrics = evaluate_embeddings(
        args.protocol,
        load_array(args.embeddings),
        labels=opt(args.labels),
        query_embeddings=opt(args.query_embeddings),
        query_labels=opt(args.query_labels),
        gnd=opt(args.gnd, load_gnd),
    )
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:<16} {value:8.2f}")
    return 0


def _embeddings_parser(prog: str) -> argparse.ArgumentParser:
    from mcip.eval.embeddings import PROTOCOLS

    p = argparse.ArgumentParser(
        prog=prog, description="Metrics of precomputed embeddings under one protocol (values in percent)."
    )
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--embeddings", required=True, help="(N, D) .npy: the database / index / image rows")
    p.add_argument("--labels", help="(N,) integer .npy labels of --embeddings")
    p.add_argument("--query-embeddings", help="(Q, D) .npy queries (revisited, knn; t2i: the text rows)")
    p.add_argument("--query-labels", help="(Q,) .npy (knn: labels; t2i: each text row's image row)")
    p.add_argument("--gnd", help="revisitop ground-truth pickle (revisited)")
    p.add_argument("--json", action="store_true", help="print one JSON object: metric name -> percent")
    p.set_defaults(func=cmd_eval_embeddings, command="eval embeddings")
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p: CommandParser = sub.add_parser(
        "eval",
        help="evaluate models on benchmarks (Table 1 layout); 'mcip eval embeddings -h' for .npy files",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="model specs or mcip model directories")
    p.add_argument(
        "--benchmarks", default="table1", help="'table1' or a comma-separated list (default: table1)"
    )
    p.add_argument("--data-root", default=".", help="folder holding the datasets (see README: Evaluation)")
    p.add_argument("--out", default="eval-results", help="output folder for JSON, CSV, Markdown and the plot")
    p.add_argument("--cache-dir", help="embedding cache (default: $MCIP_CACHE_DIR or ~/.cache/mcip/features)")
    p.add_argument(
        "--skip-missing", action="store_true", help="report absent datasets as n/a instead of failing"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.set_defaults(func=cmd_eval)
    p.add_command("embeddings", _embeddings_parser)
