"""``mcip search``: query an index by text, image (or both) or indexed id."""

from __future__ import annotations

import argparse
import json

from mcip.cli.index import index_model_args, qdrant_args, search_options


def _print_hits(hits) -> None:
    if not hits:
        print("no results")
        return
    width = min(40, max(len(h.id) for h in hits))
    label_width = min(20, max(5, *(len(str(h.metadata.get("label", ""))) for h in hits)))
    print(f"{'rank':>4}  {'score':>7}  {'id':<{width}}  {'label':<{label_width}}  path")
    for h in hits:
        label = str(h.metadata.get("label", ""))[:label_width]
        print(f"{h.rank:>4}  {h.score:7.4f}  {h.id[:width]:<{width}}  {label:<{label_width}}  {h.path}")


def cmd_search(args: argparse.Namespace) -> int:
    from mcip.errors import InputError
    from mcip.index import SearchIndex
    from mcip.index.filters import parse_where

    parse_where(args.where)  # a malformed filter fails before the model loads

    if args.id is not None and (args.text is not None or args.image is not None):
        raise InputError("--id searches with an indexed image; do not combine it with --text or --image.")
    with SearchIndex.open(
        args.index, model=args.model, device=args.device, backend_options=search_options(args),
        load_model=args.id is None,
    ) as index:  # fmt: skip
        if args.id is not None:
            hits = index.search_by_id(args.id, k=args.k, where=args.where)
        else:
            hits = index.search(
                text=args.text, image=args.image, alpha=args.alpha, k=args.k, where=args.where
            )
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
    else:
        _print_hits(hits)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="query an index by text, image (or both, --alpha) or indexed id")
    p.add_argument("--index", required=True, help="index folder")
    p.add_argument("--text", help="text query")
    p.add_argument("--image", help="query image file")
    p.add_argument("--id", help="search with the stored embedding of this indexed image")
    p.add_argument(
        "--alpha", type=float, default=0.5, help="image weight when --text and --image are both given"
    )
    p.add_argument("--k", type=int, default=10, help="results (1..1000)")
    p.add_argument(
        "--where",
        action="append",
        metavar="KEY OP VALUE",
        help="only images whose metadata match, repeatable (all must hold): OP one of = != < <= > >=, "
        "e.g. --where label=cereal --where 'price<5'; KEY is id, path, label or a manifest column",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--search-params", help="FAISS search parameters for this query, e.g. nprobe=64")
    qdrant_args(p, collection=False)
    index_model_args(p, model_required=False)
    p.set_defaults(func=cmd_search)
