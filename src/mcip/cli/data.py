"""``mcip data shard``: write webdataset tar shards from a manifest (see docs/shards.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_data_shard(args: argparse.Namespace) -> int:
    from mcip.data.shard_writer import INDEX_NAME, shard_manifest

    index = shard_manifest(
        args.manifest,
        args.out,
        shard_size=args.shard_size,
        shuffle=not args.no_shuffle,
        seed=args.seed,
        prefix=args.prefix,
        root=args.root,
        encoding=args.encoding,
    )
    if args.json:
        print(json.dumps({k: v for k, v in index.items() if k != "shards"}, indent=1))
        return 0
    shards = len(index["shards"])
    print(
        f"wrote {index['samples']} samples in {shards} shard(s) to {args.out} "
        f"({Path(args.out) / INDEX_NAME}); skipped {index['skipped_count']} unreadable image(s)"
    )
    for item in index["skipped"][:5]:
        print(f"  skipped {item['path']}: {item['reason']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data preparation: write webdataset tar shards from a manifest")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = dsub.add_parser(
        "shard",
        help="pack a manifest's images (with labels and captions) into tar shards, resumable, with shards.json",
    )
    q.add_argument("manifest", metavar="MANIFEST", help="manifest (.csv/.jsonl/.parquet) or image folder")
    q.add_argument("--out", required=True, help="folder for PREFIX-000000.tar, ... and shards.json")
    q.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    q.add_argument(
        "--no-shuffle",
        action="store_true",
        help="keep the manifest's order (default: shuffle with --seed so that a shard mixes classes); "
        "shards written in order train with the same batches as the manifest",
    )
    q.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    q.add_argument("--prefix", default="shard", help="shard file name prefix (default 'shard')")
    q.add_argument("--root", help="folder that relative paths in the manifest start from")
    q.add_argument("--encoding", help="text encoding of a CSV/JSONL manifest (default: detected)")
    q.add_argument("--json", action="store_true", help="print the index summary as JSON")
    q.set_defaults(func=cmd_data_shard)
