"""``mcip captions {retrieve,generate,template,merge,summary}``: pseudo-captions for MCIP."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mcip.cli.index import engine_args, engine_options


def _caption_records(args: argparse.Namespace):
    from mcip.data import load_records

    return load_records(args.images, args.root, args.encoding)


def _print_caption_summary(
    out: str, records=None, names=None, summary: dict | None = None, images: str | None = None
) -> None:
    """The sidecar's summary on stdout (unless ``summary`` is given: already printed as JSON) and, when its
    captions are degenerate (``mcip.captions.diversity``), the warning with the advice on stderr."""
    from mcip.captions.summary import diversity_of, format_summary, summarize_file

    if summary is None:
        summary = summarize_file(out, records=records, names=names)
        print(f"\n{out}: " + format_summary(summary))
    warning = diversity_of(summary).warning(out, images or "IMAGES")
    if warning:
        print(f"warning: {out}: {warning}", file=sys.stderr)


def _caption_names(args: argparse.Namespace, records) -> dict | None:
    from mcip.captions.templates import read_class_names

    return read_class_names(args.names, sorted({r.label for r in records})) if args.names else None


def cmd_captions_retrieve(args: argparse.Namespace) -> int:
    from mcip.captions.retrieve import retrieve_captions
    from mcip.errors import ConfigError, InputError
    from mcip.models import load_model

    if not Path(args.pool).is_file():  # before the (possibly large) model is loaded
        raise InputError(f"Caption pool not found: {args.pool}.")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be 1 or more, got {args.batch_size}.")
    engine = engine_options(args)
    if engine:  # a --shard-size of partial batches fails before the model loads
        engine["ray_options"].shard_rows(args.batch_size)
    records = _caption_records(args)
    model = load_model(args.model, device=args.device)
    s = retrieve_captions(
        model,
        records,
        args.pool,
        args.out,
        top_k=args.top_k,
        min_sim=args.min_sim,
        column=args.column,
        cache_dir=args.cache_dir,
        backend=args.backend,
        faiss_factory=args.faiss_factory,
        batch_size=args.batch_size,
        **engine,
    )
    print(
        f"pool: {s.pool_lines} lines, {s.pool_unique} unique; {s.images} images ({s.skipped_done} already done, "
        f"{len(s.unreadable)} unreadable); {s.captions_written} captions written, {s.without_captions} image(s) "
        f"with none above {args.min_sim}; {s.seconds:.1f} s"
    )
    _print_caption_summary(args.out, records, images=args.images)
    return 0


def cmd_captions_generate(args: argparse.Namespace) -> int:
    from mcip.captions.generate import generate_captions

    records = _caption_records(args)
    s = generate_captions(
        records,
        args.vlm,
        args.out,
        n=args.n,
        prompts=args.prompt,
        batch_size=args.batch_size,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        trust_remote_code=args.trust_remote_code,
    )
    print(
        f"{s.images_captioned} images captioned ({s.images_done_before} already done, {s.images_failed} failed, "
        f"{s.images_without_captions} without any caption), {s.captions_written} captions in {s.seconds:.1f} s"
    )
    for image_id, error in s.failures[:5]:
        print(f"  failed: {image_id}: {error}")
    _print_caption_summary(args.out, records, images=args.images)
    return 0


def cmd_captions_template(args: argparse.Namespace) -> int:
    from mcip.captions.templates import read_templates, template_captions

    records = _caption_records(args)
    names = _caption_names(args, records)
    written = template_captions(records, args.out, names, read_templates(args.templates), args.per_image)
    print(f"{written} template captions written")
    _print_caption_summary(args.out, records, names, images=args.images)
    return 0


def cmd_captions_merge(args: argparse.Namespace) -> int:
    from mcip.captions.merge import merge_sidecars

    merge_sidecars(args.inputs, args.out, args.max_per_image)
    _print_caption_summary(args.out)
    return 0


def cmd_captions_summary(args: argparse.Namespace) -> int:
    from mcip.captions.summary import summarize_file
    from mcip.errors import ConfigError

    if args.names and not args.images:
        raise ConfigError("--names needs --images (the manifest whose labels it names).")
    records = _caption_records(args) if args.images else None
    names = _caption_names(args, records) if records else None
    if args.json:
        summary = summarize_file(args.sidecar, top=args.top, records=records, names=names)
        print(json.dumps(summary, indent=2))
        _print_caption_summary(args.sidecar, summary=summary, images=args.images)
    else:
        _print_caption_summary(args.sidecar, records, names, images=args.images)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "captions", help="pseudo-captions for MCIP: retrieve, generate, template, merge, summary"
    )
    csub = p.add_subparsers(dest="captions_command", metavar="ACTION", required=True)
    _register_retrieve(csub)
    _register_generate(csub)
    _register_template(csub)
    _register_merge(csub)
    _register_summary(csub)


def _images_args(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "--images",
        required=True,
        help="manifest (CSV/JSONL/Parquet), image folder or webdataset shards ('shards/*.tar', "
        "'shard-{000000..000099}.tar'; the sidecar is keyed by each sample's id)",
    )
    q.add_argument("--root", help="folder that relative manifest paths start from")
    q.add_argument("--encoding", help="text encoding of a CSV/JSONL manifest (default: UTF-8 or its BOM's)")
    q.add_argument("--out", required=True, help="caption sidecar JSONL (appended to; done images skipped)")


def _register_retrieve(csub: argparse._SubParsersAction) -> None:
    q = csub.add_parser("retrieve", help="top-k captions per image from a caption pool (the authors' way)")
    _images_args(q)
    q.add_argument("--pool", required=True, help="captions: .txt (one per line), .csv, .jsonl or .parquet")
    q.add_argument("--column", help="pool column/field holding the text (default: caption, text, alt, ...)")
    q.add_argument("--model", required=True, help="the CLIP model that embeds images and captions")
    q.add_argument("--top-k", type=int, default=20)
    q.add_argument("--min-sim", type=float, default=0.27, help="minimum cosine similarity (default 0.27)")
    q.add_argument("--backend", choices=["exact", "faiss"], default="exact")
    q.add_argument("--faiss-factory", default="Flat", help="FAISS index factory string (backend faiss)")
    q.add_argument(
        "--cache-dir",
        help="embedding cache of the local engine (default: $MCIP_CACHE_DIR or ~/.cache/mcip/features); "
        "--engine ray keeps its shards in .OUT.ray-staging next to --out until the sidecar is written",
    )
    q.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64; captions: 256)")
    q.add_argument("--device", default="cpu")
    engine_args(q)
    q.set_defaults(func=cmd_captions_retrieve)


def _register_generate(csub: argparse._SubParsersAction) -> None:
    q = csub.add_parser("generate", help="captions from a vision-language model (transformers)")
    _images_args(q)
    q.add_argument("--vlm", required=True, help="hub id or local directory of an image-text-to-text model")
    q.add_argument(
        "--n", type=int, default=5, help="captions per image and prompt: 1 = greedy, more = sampled"
    )
    q.add_argument("--prompt", action="append", help="a prompt (repeatable: several prompts, more diversity)")
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--max-new-tokens", type=int, default=40)
    q.add_argument("--temperature", type=float, default=0.9, help="sampling temperature (n > 1)")
    q.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (n > 1)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow models that ship their own code (e.g. some Florence-2 repositories)",
    )
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=cmd_captions_generate)


def _register_template(csub: argparse._SubParsersAction) -> None:
    q = csub.add_parser("template", help="captions from class names and templates ('a photo of a {}.')")
    _images_args(q)
    q.add_argument("--names", help="class names, one 'label<TAB>name' per line (default: the labels)")
    q.add_argument("--templates", default="default", help="file with one template per line, or 'default'")
    q.add_argument("--per-image", type=int, default=10, help="templates per image (chosen per image id)")
    q.set_defaults(func=cmd_captions_template)


def _register_merge(csub: argparse._SubParsersAction) -> None:
    q = csub.add_parser("merge", help="combine sidecars (earlier inputs first) with a cap per image")
    q.add_argument("inputs", nargs="+", help="caption sidecars")
    q.add_argument("--out", required=True)
    q.add_argument("--max-per-image", type=int, default=20)
    q.set_defaults(func=cmd_captions_merge)


def _register_summary(csub: argparse._SubParsersAction) -> None:
    q = csub.add_parser(
        "summary",
        help="captions per image, images without captions, most frequent captions, diversity (warns when "
        "a few captions dominate)",
    )
    q.add_argument("sidecar")
    q.add_argument("--top", type=int, default=10)
    q.add_argument("--images", help="the manifest or folder the sidecar captions: adds per-class diversity")
    q.add_argument("--root", help="folder that relative manifest paths start from")
    q.add_argument("--encoding", help="text encoding of a CSV/JSONL manifest (default: UTF-8 or its BOM's)")
    q.add_argument("--names", help="class names, one 'label<TAB>name' per line (with --images)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_captions_summary)
