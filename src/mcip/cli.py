"""``mcip <command>``: a thin shell. Each command parses arguments and calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mcip.errors import MCIPError

Command = Callable[[argparse.Namespace], int]
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="weights dtype")
    p.add_argument(
        "--drop-projector",
        action="store_true",
        help="use pre-projector image features as the embedding (ICMR'23 variant)",
    )


def cmd_models(args: argparse.Namespace) -> int:
    from mcip.models.factory import SPEC_HELP, list_backends

    if args.backend == "openclip":
        import open_clip

        for name in open_clip.list_models():
            tags = open_clip.list_pretrained_tags_by_model(name)
            print(f"openclip:{name}" + (f"  [{', '.join(tags)}]" if tags else ""))
        return 0
    print("backends:", ", ".join(list_backends()))
    print("composed presets: composed:lab (EfficientNet-Lite0 + all-MiniLM-L6-v2, offline)")
    print(SPEC_HELP)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from mcip.models import load_model

    model = load_model(
        args.model, device=args.device, drop_projector=args.drop_projector, precision=args.precision
    )
    sizes = model.part_sizes()
    info = {
        "spec": model.spec,
        "backend": model.backend,
        "embed_dim": model.embed_dim,
        "image_config": model.image_config.to_dict(),
        "text_blocks": len(model.text_block_prefixes()),
        "parameters": sizes,
        "total_parameters": sum(sizes.values()),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"{model.spec}  ({model.backend}, joint embedding D={model.embed_dim}, image {model.image_size} px)"
    )
    print(f"text tower: {info['text_blocks']} blocks")
    for part, n in sizes.items():
        print(f"  {part:<16} {n:>14,d} parameters")
    print(f"  {'total':<16} {info['total_parameters']:>14,d}")
    return 0


def cmd_save(args: argparse.Namespace) -> int:
    from mcip.models import load_model, save_model

    model = load_model(args.model, device="cpu", drop_projector=args.drop_projector)
    path = save_model(model, args.out)
    print(f"saved {model.spec} -> {path} (reload with: mcip info {path})")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from mcip.data.images import find_images
    from mcip.embed import encode_images, write_encoded
    from mcip.models import load_model

    root = Path(args.images)
    paths = find_images(root)
    model = load_model(
        args.model, device=args.device, drop_projector=args.drop_projector, precision=args.precision
    )
    result = encode_images(model, paths, batch_size=args.batch_size, progress=not args.quiet)
    summary = write_encoded(result, args.out, root, model.spec)
    names = [str(p.relative_to(root)) for p in result.paths]
    if args.neighbours and len(names) > 1:
        sim = result.embeddings @ result.embeddings.T
        np.fill_diagonal(sim, -np.inf)
        print(f"\nnearest neighbours (cosine) of the first {min(args.show, len(names))} images:")
        for i in range(min(args.show, len(names))):
            order = np.argsort(-sim[i])[: args.neighbours]
            hits = ", ".join(f"{names[j]} {sim[i, j]:.2f}" for j in order)
            print(f"  {names[i]:<32} -> {hits}")
    for query in args.query or []:
        with torch.no_grad():
            text = model.encode_text([query]).float().cpu().numpy()[0]
        scores = result.embeddings @ text
        top = np.argsort(-scores)[:3]
        print(f"\ntext '{query}' -> " + ", ".join(f"{names[j]} {scores[j]:.2f}" for j in top))
    acc = summary["folder_1nn_accuracy"]
    print(
        f"\nencoded {summary['images']} images (D={summary['embedding_dim']}) in {summary['seconds']:.1f} s, "
        f"skipped {summary['skipped']} unreadable"
        + (f"; leave-one-out 1-NN accuracy by folder: {100 * acc:.1f}%" if acc is not None else "")
        + f"\nwrote {Path(args.out) / 'embeddings.npy'}, images.txt, summary.json"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from mcip.train.config import load_config, shipped_configs
    from mcip.train.stages import run

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
    from mcip.train.preempt import TrainingInterrupted

    raw = load_config(args.config, args.set)
    try:
        results = run(raw, resume=args.resume, progress=not args.quiet)
    except TrainingInterrupted as exc:  # SIGTERM / SIGUSR1 / Ctrl-C: checkpointed; _run_command reports it
        exc.resume_command = f"mcip train {Path(str(raw.get('out', 'OUT'))) / 'config.yaml'} --resume"
        raise
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
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from mcip.data import load_records
    from mcip.train.wise import parse_alpha, parse_grid
    from mcip.train.wise_merge import format_summary, wise_merge

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
        device=args.device,
        start_drop_projector=args.drop_projector,
        progress=not args.quiet,
    )
    print(format_summary(result))
    return 0


def _add_merge_parser(sub) -> None:
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
        choices=["combined", "i2i", "t2i"],
        help="what picks A: combined = mean of val I2I mAP and val T2I R@5, each relative to A = 0 "
        "(default); i2i = val I2I mAP; t2i = val T2I R@5",
    )
    p.add_argument(
        "--names",
        help="class names for val zero-shot top-1 ('a photo of a {name}.'), one 'label<TAB>name' per line "
        "(labels not listed keep their own text)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="val images encoded at a time (default 64)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument(
        "--drop-projector",
        action="store_true",
        help="drop START's image projector (when FINETUNED was trained with model.drop_projector)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-alpha progress lines")
    p.set_defaults(func=cmd_merge)


def cmd_eval(args: argparse.Namespace) -> int:
    from mcip.eval.benchmarks import resolve_benchmarks
    from mcip.eval.report import markdown_table, write_report
    from mcip.eval.runner import benchmark_keys, evaluate_models

    benchmarks = resolve_benchmarks(args.benchmarks)
    reports = evaluate_models(
        args.models,
        benchmarks,
        args.data_root,
        cache_dir=args.cache_dir,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        skip_missing=args.skip_missing,
    )
    keys = benchmark_keys(benchmarks)
    columns = [(k, b.family, b.table1_metric) for k, b in zip(keys, benchmarks, strict=True)]
    paths = write_report(reports, columns, args.out)
    print("\n" + markdown_table(reports, [(n, f) for n, f, _ in columns]))
    for r in reports:
        images = sum(res.images for res in r.results.values())
        bad = sum(res.unreadable for res in r.results.values())
        print(
            f"{r.model}: {len(r.results)} benchmark(s), {images} images ({bad} unreadable) in {r.seconds:.1f} s"
            + (f"; absent: {', '.join(r.missing)}" if r.missing else "")
        )
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if "plot" not in paths:
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


def _eval_embeddings_parser() -> argparse.ArgumentParser:
    from mcip.eval.embeddings import PROTOCOLS

    p = argparse.ArgumentParser(
        prog="mcip eval embeddings",
        description="Metrics of precomputed embeddings under one protocol (values in percent).",
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
    from mcip.errors import InputError
    from mcip.models import load_model

    if not Path(args.pool).is_file():  # before the (possibly large) model is loaded
        raise InputError(f"Caption pool not found: {args.pool}.")
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


def _add_captions_parser(sub) -> None:
    p = sub.add_parser(
        "captions", help="pseudo-captions for MCIP: retrieve, generate, template, merge, summary"
    )
    csub = p.add_subparsers(dest="captions_command", metavar="ACTION", required=True)

    def images_args(q):
        q.add_argument("--images", required=True, help="manifest (CSV/JSONL/Parquet) or image folder")
        q.add_argument("--root", help="folder that relative manifest paths start from")
        q.add_argument(
            "--encoding", help="text encoding of a CSV/JSONL manifest (default: UTF-8 or its BOM's)"
        )
        q.add_argument(
            "--out", required=True, help="caption sidecar JSONL (appended to; done images skipped)"
        )

    q = csub.add_parser("retrieve", help="top-k captions per image from a caption pool (the authors' way)")
    images_args(q)
    q.add_argument("--pool", required=True, help="captions: .txt (one per line), .csv, .jsonl or .parquet")
    q.add_argument("--column", help="pool column/field holding the text (default: caption, text, alt, ...)")
    q.add_argument("--model", required=True, help="the CLIP model that embeds images and captions")
    q.add_argument("--top-k", type=int, default=20)
    q.add_argument("--min-sim", type=float, default=0.27, help="minimum cosine similarity (default 0.27)")
    q.add_argument("--backend", choices=["exact", "faiss"], default="exact")
    q.add_argument("--faiss-factory", default="Flat", help="FAISS index factory string (backend faiss)")
    q.add_argument("--cache-dir", help="embedding cache (default: $MCIP_CACHE_DIR or ~/.cache/mcip/features)")
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=cmd_captions_retrieve)

    q = csub.add_parser("generate", help="captions from a vision-language model (transformers)")
    images_args(q)
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

    q = csub.add_parser("template", help="captions from class names and templates ('a photo of a {}.')")
    images_args(q)
    q.add_argument("--names", help="class names, one 'label<TAB>name' per line (default: the labels)")
    q.add_argument("--templates", default="default", help="file with one template per line, or 'default'")
    q.add_argument("--per-image", type=int, default=10, help="templates per image (chosen per image id)")
    q.set_defaults(func=cmd_captions_template)

    q = csub.add_parser("merge", help="combine sidecars (earlier inputs first) with a cap per image")
    q.add_argument("inputs", nargs="+", help="caption sidecars")
    q.add_argument("--out", required=True)
    q.add_argument("--max-per-image", type=int, default=20)
    q.set_defaults(func=cmd_captions_merge)

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


def default_lab_root() -> Path:
    """``$MCIP_LAB_DIR``, else ``~/.cache/mcip/lab``."""
    import os

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
    import dataclasses

    from mcip.lab.run import FULL, QUICK, run_lab

    settings = QUICK if args.quick else FULL
    if args.hard_caption_weight is not None:
        settings = dataclasses.replace(settings, hard_caption_weight=args.hard_caption_weight)
    if args.all_rows:
        settings = dataclasses.replace(settings, all_rows=True)
    result = run_lab(
        Path(args.root) if args.root else default_lab_root(),
        args.out,
        settings=settings,
        force=args.force,
        progress=not args.quiet,
    )
    print()
    print(result.table)
    print(result.reading)
    print()
    print(result.search)
    for name, path in result.files.items():
        print(f"{name:>9}: {path}")
    print(f"mcip lab run: finished in {result.seconds / 60:.1f} min")
    return 0


def _add_lab_parser(sub) -> None:
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
        help="MCArcMargin's hardest-caption term h (default 0.1, the authors' value; 0 disables)",
    )
    q.add_argument(
        "--all-rows",
        action="store_true",
        help="also the GPR-FT row without projector (ICMR'23; its text columns are n/a)",
    )
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_lab_run)


def build_parser() -> argparse.ArgumentParser:
    from mcip.index.cli import add_index_commands
    from mcip.serve.cli import add_serve_command

    parser = argparse.ArgumentParser(
        prog="mcip",
        description="Fine-tune and use CLIP-style models whose single image embedding serves image search, "
        "k-NN and zero-shot classification and text search (Schall et al., SISAP 2024).",
    )
    from mcip import __version__

    parser.add_argument("--version", action="version", version=f"mcip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list model backends and presets (--backend openclip: architectures)")
    p.add_argument("--backend", choices=["openclip"], help="list this backend's architectures and tags")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="load a model and show its parts, sizes and embedding width")
    p.add_argument("model", help="model spec (openclip:..., hf:..., composed:...) or an mcip model directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("save", help="save any model spec as an mcip model directory (safetensors + JSON)")
    p.add_argument("model", help="model spec or mcip model directory")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--drop-projector", action="store_true", help="drop the image projector before saving")
    p.set_defaults(func=cmd_save)

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

    p = sub.add_parser(
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
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.set_defaults(func=cmd_eval)

    _add_merge_parser(sub)
    _add_captions_parser(sub)
    _add_lab_parser(sub)
    add_index_commands(sub)  # mcip index ..., mcip search
    add_serve_command(sub)  # mcip serve

    p = sub.add_parser(
        "encode", help="encode a folder of images into embeddings.npy (+ neighbours, text queries)"
    )
    p.add_argument("--model", required=True, help="model spec or mcip model directory")
    p.add_argument("--images", required=True, help="folder of images (recursive; sub-folders act as labels)")
    p.add_argument("--out", required=True, help="output folder for embeddings.npy, images.txt, summary.json")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--neighbours", type=int, default=3, help="nearest neighbours to print per image (0: none)"
    )
    p.add_argument("--show", type=int, default=8, help="how many images to print neighbours for")
    p.add_argument("--query", action="append", help="a text query to rank the images by (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(p)
    p.set_defaults(func=cmd_encode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mcip ARGV``; returns the exit status. A reader that closes the pipe early (``mcip ... | head``)
    ends it quietly with 141 (128 + SIGPIPE), as Unix tools do, instead of a BrokenPipeError traceback."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # inside the try: buffered output meets a closed pipe here, not at exit
        return status
    except BrokenPipeError:
        try:  # Python flushes stdout again at exit: point it at devnull so that flush cannot fail
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file descriptor (e.g. captured in-process)
            pass
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["eval", "embeddings"]:
        args = _eval_embeddings_parser().parse_args(argv[2:])
        return _run_command(args)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except MCIPError as exc:
        print(f"mcip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # mcip.train.preempt.TrainingInterrupted: 128 + its signal, once
        if getattr(exc, "rank", 0) == 0:
            print(f"mcip {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_status", 130)


if __name__ == "__main__":
    sys.exit(main())
