"""``mcip models``, ``mcip info`` and ``mcip save``: list backends, inspect and save a model."""

from __future__ import annotations

import argparse
import json

from mcip.cli._common import add_model_args


def cmd_models(args: argparse.Namespace) -> int:
    from mcip.models.factory import SPEC_HELP, list_backends, list_presets

    if args.backend == "openclip":
        import open_clip

        for name in open_clip.list_models():
            tags = open_clip.list_pretrained_tags_by_model(name)
            print(f"openclip:{name}" + (f"  [{', '.join(tags)}]" if tags else ""))
        return 0
    print("backends:", ", ".join(list_backends()))
    print("presets:")
    for name, description in list_presets().items():
        print(f"  {name}  {description}")
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model backends and presets (--backend openclip: architectures)")
    p.add_argument("--backend", choices=["openclip"], help="list this backend's architectures and tags")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="load a model and show its parts, sizes and embedding width")
    p.add_argument("model", help="model spec (openclip:..., hf:..., composed:...) or an mcip model directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("save", help="save any model spec as an mcip model directory (safetensors + JSON)")
    p.add_argument("model", help="model spec or mcip model directory")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--drop-projector", action="store_true", help="drop the image projector before saving")
    p.set_defaults(func=cmd_save)
