"""``mcip index {build,add,check,info}``: thin shells over ``mcip.index``."""

from __future__ import annotations

import argparse
import json
import math
import sys

from mcip.cli._common import COMPILE_HELP, add_device_arg, add_model_args, default_workers
from mcip.errors import ConfigError

MAX_LISTED = 5


def qdrant_options(args: argparse.Namespace) -> dict:
    names = {"qdrant_url": "url", "qdrant_api_key": "api_key", "qdrant_collection": "collection"}
    return {opt: getattr(args, arg) for arg, opt in names.items() if getattr(args, arg, None) is not None}


def search_options(args: argparse.Namespace) -> dict:
    options = qdrant_options(args)
    if getattr(args, "search_params", None):
        options["search_params"] = args.search_params
    return options


def engine_args(p: argparse.ArgumentParser) -> None:
    """``--engine`` and the Ray options (``mcip encode``, ``mcip index build|add|rebuild``, ``mcip captions
    retrieve``)."""
    g = p.add_argument_group(
        "engine",
        "--engine ray runs decoding (CPU tasks) and the model (an actor pool: one GPU per actor where the "
        "cluster has GPUs) on Ray (pip install 'mcip[ray]'): the same output as local, resumable by shard. "
        "A real cluster: `ray start --head --port 6379` on the head node, `ray start --address HEAD:6379` "
        "on each worker node, then --engine ray --address HEAD:6379 (docs/scaling.md).",
    )
    g.add_argument(
        "--engine", choices=["local", "ray"], default="local",
        help="local (default): this process (and its decoding workers); ray: a Ray cluster",
    )  # fmt: skip
    g.add_argument(
        "--address", help="Ray cluster to join (HEAD:6379, or auto); default: start a local one for this job"
    )
    g.add_argument(
        "--ray-cpus", type=int, help="CPUs of the local Ray cluster (default: all of this machine)"
    )
    g.add_argument(
        "--shard-size", type=int, help="records per shard, the unit a rerun resumes (a multiple of "
        "--batch-size; default: the multiple nearest above 4096; captions retrieve: images per shard, the "
        "pool goes in shards of about 4096 captions)",
    )  # fmt: skip
    g.add_argument("--actors", type=int, help="model replicas (default: one per GPU, else half the CPUs)")


def engine_options(args: argparse.Namespace) -> dict:
    """``engine`` and ``ray_options`` for the library call; Ray options without ``--engine ray`` fail."""
    ray = {"--address": args.address, "--ray-cpus": args.ray_cpus, "--shard-size": args.shard_size,
           "--actors": args.actors}  # fmt: skip
    if args.engine != "ray":
        given = [flag for flag, value in ray.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} configure --engine ray; add --engine ray or drop them.")
        return {}
    from mcip.index.ray_engine import RayOptions

    options = RayOptions(args.address, args.ray_cpus, args.shard_size, args.actors)
    return {"engine": "ray", "ray_options": options}


def _print_summary(s: dict, op: str) -> None:
    print(
        f"{op}: {s['added']} image(s) encoded and indexed; {s['count']} in {s['index']} "
        f"({s['backend']}{' ' + s['factory'] if s['factory'] else ''}, D={s['dim']}) in {s['seconds']:.1f} s"
        f" (encoding {s['encode_seconds']:.1f} s); skipped {s['skipped_unreadable']} unreadable, "
        f"{s['skipped_duplicates']} already indexed"
        + (f"; {s['replaced']} changed file(s) re-encoded" if s.get("replaced") else "")
        + (
            f"; resumed after {s['resumed_rows']} rows encoded by an interrupted run"
            if s["resumed_rows"]
            else ""
        )
    )
    for path, reason in list(s["skipped_files"].items())[:MAX_LISTED]:
        print(f"  unreadable: {reason}" if reason.startswith(path) else f"  unreadable: {path}: {reason}")
    if s["skipped_unreadable"] > MAX_LISTED:
        print(f"  ... and {s['skipped_unreadable'] - MAX_LISTED} more (listed in {s['index']}/manifest.json)")


def _resume_hint(out: str) -> None:
    print(
        f"interrupted: the images encoded so far are kept next to {out}; run the same command again to continue.",
        file=sys.stderr,
    )


def cmd_index_build(args: argparse.Namespace) -> int:
    from mcip.index import build_index

    options = {"precision": args.precision, "drop_projector": args.drop_projector}
    backend_options = search_options(args)
    if args.train_size is not None:
        backend_options["train_size"] = args.train_size
    try:
        summary = build_index(
            args.model, args.images, args.out, factory=args.factory, backend=args.backend,
            batch_size=args.batch_size, progress=not args.quiet, root=args.root, device=args.device,
            num_workers=args.workers, model_options=options, wait=args.wait, encoding=args.encoding,
            dim=args.dim, compile=args.compile, **engine_options(args), **backend_options,
        )  # fmt: skip
    except KeyboardInterrupt:
        _resume_hint(args.out)
        raise
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    _print_summary(summary, "build")
    print(f'query it: mcip search --index {args.out} --text "..."  (or --image FILE)')
    return 0


def cmd_index_add(args: argparse.Namespace) -> int:
    from mcip.index import add_to_index

    try:
        summary = add_to_index(
            args.index, args.images, model=args.model, batch_size=args.batch_size, progress=not args.quiet,
            root=args.root, device=args.device, num_workers=args.workers, wait=args.wait,
            encoding=args.encoding, compile=args.compile, **engine_options(args), **qdrant_options(args),
        )  # fmt: skip
    except KeyboardInterrupt:
        _resume_hint(args.index)
        raise
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, "add")
    return 0


def cmd_index_check(args: argparse.Namespace) -> int:
    from mcip.index import check_index

    r = check_index(
        args.index, args.captions, sample=args.sample, root=args.root, model=args.model, device=args.device,
        seed=args.seed, min_recall=args.min_recall, encoding=args.encoding,
    )  # fmt: skip
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(
        f"text-to-image recall of {r['model']} on {r['images_sampled']} captioned image(s) "
        f"({r['queries']} captions) among {r['index_size']} indexed (exact search):"
    )
    for key in (k for k in r if k.startswith("recall@")):
        print(f"  {key:<10} {100 * r[key]:6.1f}%")
    print(
        f"  chance@10  {100 * r['chance@10']:6.2f}%   alignment threshold@10 {100 * r['threshold@10']:.1f}%"
    )
    if r["unmatched_rows"]:
        print(
            f"  {r['unmatched_rows']} caption row(s) name images not in the index, e.g. {r['unmatched_examples'][0]}"
        )
    print(f"verdict: {r['verdict']}")
    if r["warning"]:
        print(f"warning: {r['warning']}", file=sys.stderr)
    return 0


def cmd_index_remove(args: argparse.Namespace) -> int:
    from mcip.data.textfile import open_text
    from mcip.errors import InputError
    from mcip.index.maintain import remove_from_index

    ids = list(args.id or [])
    if args.ids:
        try:
            with open_text(args.ids, args.encoding) as f:
                ids += [line.strip() for line in f if line.strip()]
        except OSError as exc:  # a folder, a missing or unreadable file
            raise InputError(
                f"Cannot read the id file {args.ids} ({exc.strerror or exc}); --ids takes a text file "
                "with one id per line."
            ) from None
    summary = remove_from_index(args.index, ids, args.where, wait=args.wait, missing_ok=args.missing_ok)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    missing = f"; {len(summary['missing'])} id(s) were not in the index" if summary["missing"] else ""
    print(f"remove: {summary['removed']} image(s) removed; {summary['count']} left in {summary['index']} "
          f"in {summary['seconds']:.1f} s{missing}")  # fmt: skip
    return 0


def cmd_index_rebuild(args: argparse.Namespace) -> int:
    from mcip.index.maintain import rebuild_index

    try:
        summary = rebuild_index(
            args.index, args.model, out=args.out, batch_size=args.batch_size, progress=not args.quiet,
            device=args.device, num_workers=args.workers, wait=args.wait, compile=args.compile,
            model_options={"precision": args.precision, "drop_projector": args.drop_projector},
            **engine_options(args),
        )  # fmt: skip
    except KeyboardInterrupt:
        _resume_hint(args.out or args.index)
        raise
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, "rebuild")
        print(f"  model {summary['previous_model']} -> {summary['model']}")
    return 0


def cmd_index_info(args: argparse.Namespace) -> int:
    from mcip.index import index_info

    info = index_info(args.index)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    last = info["history"][-1] if info.get("history") else {}
    print(f"{info['path']}: {info['count']} images, D={info['dim']} float16, {info['bytes'] / 2**20:.1f} MiB")
    print(f"  model     {info['model']}  (options {info['model_options']})")
    print(f"  weights   fingerprint {info['fingerprint']}, image tower {info['image_fingerprint']}")
    print(f"  backend   {info['backend']}  factory {info['factory']}  options {info['backend_options']}")
    print(
        f"  created   {info['created']}, updated {info['updated']} ({last.get('op', '?')}), mcip {info['mcip_version']}"
    )
    print(
        f"  skipped   {info['skipped_unreadable']} unreadable, {info['skipped_duplicates']} duplicate ids (all builds)"
    )
    print("  history")
    for entry in info.get("history", []):
        what = {"remove": f"-{entry.get('removed', '?')}"}.get(entry["op"], f"+{entry.get('added', '?')}")
        model = f"  model {entry['model']}" if entry.get("model") else ""
        before = f" (was {entry['previous_model']})" if entry.get("previous_model") else ""
        print(f"    {entry.get('time', '?')}  {entry['op']:<8} {what:>8}{model}{before}")
    return 0


def index_model_args(p: argparse.ArgumentParser, model_required: bool) -> None:
    """``--model`` and ``--device``; a build also takes ``--precision`` and ``--drop-projector`` (stored:
    the other commands load the model the way the index was built)."""
    if model_required:
        p.add_argument("--model", required=True, help="model spec or saved model directory")
        add_model_args(p)
        return
    p.add_argument(
        "--model", help="model spec or saved model directory (default: the one the index was built with)"
    )
    add_device_arg(p)


def qdrant_args(p: argparse.ArgumentParser, collection: bool) -> None:
    p.add_argument(
        "--qdrant-url", help="Qdrant server, e.g. http://localhost:6333 (default: local mode in the index)"
    )
    p.add_argument("--qdrant-api-key", help="Qdrant API key (default: $QDRANT_API_KEY; never stored)")
    if collection:
        p.add_argument("--qdrant-collection", help="Qdrant collection alias (default: mcip)")


def _encoding_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--encoding", help="text encoding of a CSV/JSONL file, e.g. latin-1 (default: UTF-8 or its BOM's)"
    )


def _wait_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait", nargs="?", type=float, const=math.inf, default=0.0, metavar="SECONDS",
        help="if another process is writing the index, wait for it (up to SECONDS; no value: as long as "
        "it takes) instead of exiting with status 2",
    )  # fmt: skip


def _encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--images", required=True, help="image folder (recursive) or manifest (.csv/.jsonl/.parquet)"
    )
    p.add_argument("--root", help="folder that relative manifest paths start from (default: the manifest's)")
    _encoding_arg(p)
    _wait_arg(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=default_workers(), help="image-decoding processes")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    engine_args(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index", help="search indexes: build, add, remove, rebuild, check text alignment, info"
    )
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    _register_build(isub)

    q = isub.add_parser(
        "add", help="append new images; re-encode indexed ones whose file changed (content hash)"
    )
    q.add_argument("--index", required=True, help="index folder")
    _encode_args(q)
    qdrant_args(q, collection=False)
    index_model_args(q, model_required=False)
    q.set_defaults(func=cmd_index_add)
    _register_check(isub)

    q = isub.add_parser(
        "remove", help="remove images by id or by a metadata filter (a new version, swapped in atomically)"
    )
    q.add_argument("--index", required=True, help="index folder")
    q.add_argument("--id", action="append", help="an id to remove (repeatable)")
    q.add_argument("--ids", help="a text file of ids to remove, one per line")
    q.add_argument("--where", action="append", metavar="KEY OP VALUE",
                   help="remove the images matching every filter, e.g. --where label=discontinued")  # fmt: skip
    q.add_argument("--missing-ok", action="store_true", help="ids the index lacks are counted, not an error")
    _encoding_arg(q)
    _wait_arg(q)
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=cmd_index_remove)

    q = isub.add_parser(
        "rebuild",
        help="re-encode every indexed image with a new model (after fine-tuning): same backend and factory, "
        "resumable, swapped in atomically; the history keeps the lineage",
    )
    q.add_argument("--index", required=True, help="index folder")
    q.add_argument("--out", help="write the new version here instead of replacing --index")
    _wait_arg(q)
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--workers", type=int, default=default_workers(), help="image-decoding processes")
    q.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    engine_args(q)
    index_model_args(q, model_required=True)
    q.set_defaults(func=cmd_index_rebuild)

    q = isub.add_parser("info", help="what an index holds: model, fingerprints, backend, counts, history")
    q.add_argument("--index", required=True, help="index folder")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_index_info)


def _register_build(isub: argparse._SubParsersAction) -> None:
    q = isub.add_parser("build", help="encode images into a new index (resumable; replaces --out atomically)")
    _encode_args(q)
    q.add_argument("--out", required=True, help="index folder")
    q.add_argument(
        "--factory",
        default="Flat",
        help="FAISS index factory string: Flat (exact), HNSW32, IVF4096,PQ64, ...",
    )
    q.add_argument("--backend", default="faiss", choices=["faiss", "qdrant"])
    q.add_argument(
        "--dim",
        type=int,
        metavar="K",
        help="FAISS: reduce vectors to K dimensions with a PCA trained on a sample (smaller index, lower "
        "recall: see benchmarks/index_pca.py); the full embeddings stay in the float16 store",
    )
    q.add_argument(
        "--search-params", help="FAISS search parameters stored as default, e.g. nprobe=32 or efSearch=128"
    )
    q.add_argument(
        "--train-size", type=int, help="vectors sampled to train IVF/PQ (default: 64 per list, >= 65,536)"
    )
    qdrant_args(q, collection=True)
    index_model_args(q, model_required=True)
    q.set_defaults(func=cmd_index_build)


def _register_check(isub: argparse._SubParsersAction) -> None:
    q = isub.add_parser(
        "check", help="text-to-image recall on captioned indexed images; warns if alignment broke"
    )
    q.add_argument("--index", required=True, help="index folder")
    q.add_argument(
        "--captions", required=True, help="manifest with captions (path or id) or a caption sidecar"
    )
    q.add_argument("--root", help="folder that relative manifest paths start from")
    _encoding_arg(q)
    q.add_argument("--sample", type=int, default=1000, help="captioned images to sample (default 1000)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--min-recall", type=float, default=0.2, help="recall@10 below this warns (default 0.2)")
    q.add_argument("--json", action="store_true")
    index_model_args(q, model_required=False)
    q.set_defaults(func=cmd_index_check)
