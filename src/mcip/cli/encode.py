"""``mcip encode``: a folder of images -> embeddings.npy, with nearest neighbours and text queries shown."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from mcip.cli._common import COMPILE_HELP, add_model_args, default_workers
from mcip.cli.index import engine_args, engine_options
from mcip.errors import ConfigError


def cmd_encode(args: argparse.Namespace) -> int:
    from mcip.data.images import find_images
    from mcip.embed import rank_by_text, write_encoded

    if args.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {args.workers}.")
    engine = engine_options(args)
    if engine and args.runtime != "torch":
        raise ConfigError("--engine ray runs PyTorch models; drop --runtime, or --engine ray.")
    root = Path(args.images)
    paths = find_images(root)
    model = _load_encoder(args)
    result = _encode(args, model, paths, engine)
    summary = write_encoded(result, args.out, root, model.spec)
    shutil.rmtree(_ray_staging(args.out), ignore_errors=True)  # --engine ray's finished shards
    names = [str(p.relative_to(root)) for p in result.paths]
    if args.neighbours and len(names) > 1:
        _print_neighbours(result.embeddings, names, args.neighbours, args.show)
    for query in args.query or []:
        top, scores = rank_by_text(model, result.embeddings, query, k=3)
        hits = ", ".join(f"{names[j]} {score:.2f}" for j, score in zip(top, scores, strict=True))
        print(f"\ntext '{query}' -> " + hits)
    acc = summary["folder_1nn_accuracy"]
    print(
        f"\nencoded {summary['images']} images (D={summary['embedding_dim']}) in {summary['seconds']:.1f} s, "
        f"skipped {summary['skipped']} unreadable"
        + (f"; leave-one-out 1-NN accuracy by folder: {100 * acc:.1f}%" if acc is not None else "")
        + f"\nwrote {Path(args.out) / 'embeddings.npy'}, images.txt, summary.json"
    )
    return 0


def _load_encoder(args: argparse.Namespace):
    """The PyTorch model, or with ``--runtime onnx`` an export folder run by onnxruntime."""
    if args.runtime == "onnx":
        from mcip.export import load_onnx_model

        torch_only = {"--compile": args.compile, "--drop-projector": args.drop_projector}
        torch_only["--precision " + args.precision] = args.precision != "fp32"
        given = [flag for flag, on in torch_only.items() if on]
        if given:
            raise ConfigError(
                f"{', '.join(given)} apply to PyTorch models, not to --runtime onnx (the export folder "
                "fixes the graph); leave them out, or export again (mcip export --onnx ...)."
            )
        return load_onnx_model(args.model, device=args.device)
    from mcip.models import load_model

    return load_model(
        args.model, device=args.device, drop_projector=args.drop_projector, precision=args.precision
    )


def _ray_staging(out: str) -> Path:
    return Path(out) / ".ray-staging"


def _encode(args: argparse.Namespace, model, paths: list[Path], engine: dict):
    """``mcip.embed.encode_images``, or with ``--engine ray`` the same result computed on Ray, its shards
    kept in ``OUT/.ray-staging`` until the result is written (a rerun resumes them)."""
    if not engine:
        from mcip.embed import encode_images

        return encode_images(
            model, paths, batch_size=args.batch_size, progress=not args.quiet, num_workers=args.workers,
            compile=args.compile,
        )  # fmt: skip
    from mcip.index.ray_jobs import encode_images_ray

    staging = _ray_staging(args.out)
    staging.parent.mkdir(parents=True, exist_ok=True)
    result, _ = encode_images_ray(
        model, paths, staging, args.batch_size, not args.quiet, args.compile, engine["ray_options"]
    )
    return result


def _print_neighbours(embeddings, names: list[str], k: int, show: int) -> None:
    from mcip.embed import nearest_neighbours

    shown = min(show, len(names))
    print(f"\nnearest neighbours (cosine) of the first {shown} images:")
    indices, similarities = nearest_neighbours(embeddings, k, rows=shown)
    for i, (row, sims) in enumerate(zip(indices, similarities, strict=True)):
        hits = ", ".join(f"{names[j]} {s:.2f}" for j, s in zip(row, sims, strict=True))
        print(f"  {names[i]:<32} -> {hits}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode", help="encode a folder of images into embeddings.npy (+ neighbours, text queries)"
    )
    p.add_argument(
        "--model", required=True, help="model spec or mcip model directory (--runtime onnx: an export folder)"
    )
    p.add_argument("--images", required=True, help="folder of images (recursive; sub-folders act as labels)")
    p.add_argument(
        "--runtime",
        choices=["torch", "onnx"],
        default="torch",
        help="torch (default), or onnx: run a folder written by mcip export --onnx on onnxruntime",
    )
    p.add_argument("--out", required=True, help="output folder for embeddings.npy, images.txt, summary.json")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--neighbours", type=int, default=3, help="nearest neighbours to print per image (0: none)"
    )
    p.add_argument("--show", type=int, default=8, help="how many images to print neighbours for")
    p.add_argument("--query", action="append", help="a text query to rank the images by (repeatable)")
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help=f"image-decoding processes (default {default_workers()}: one core left to the model, at most 4; "
        "0 decodes in this process)",
    )
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    engine_args(p)
    p.set_defaults(func=cmd_encode)
