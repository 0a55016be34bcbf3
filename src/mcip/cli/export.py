"""``mcip export --onnx MODEL --out DIR``: the two towers as ONNX graphs, with tokenizer and preprocessing."""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    from mcip.export import check_export_target, export_onnx
    from mcip.models import load_model

    check_export_target(args.out)  # before the model loads: missing onnxruntime, a used folder
    model = load_model(args.onnx, device="cpu", drop_projector=args.drop_projector)
    result = export_onnx(model, args.out, **({"opset": args.opset} if args.opset else {}))
    print(f"exported {model.spec} (D={model.embed_dim}) to {result.folder}:")
    for name in result.files:
        print(f"  {name}")
    print(
        f"least cosine to PyTorch on the export's check batch: image {result.image_min_cosine:.6f}, "
        f"text {result.text_min_cosine:.6f}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model for deployment without PyTorch (ONNX image and text graphs)",
        description="Write image.onnx, text.onnx, the tokenizer's files and preprocess.json (image "
        "preprocessing and tokenizer rules) into a new folder; see docs/export.md.",
    )
    p.add_argument("--onnx", required=True, metavar="MODEL", help="model spec or mcip model directory")
    p.add_argument("--out", required=True, help="new (or empty) output folder")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument(
        "--drop-projector",
        action="store_true",
        help="use pre-projector image features as the embedding (ICMR'23 variant)",
    )
    p.set_defaults(func=cmd_export)
