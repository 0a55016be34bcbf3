"""onnxruntime against PyTorch on the CPU: images/s of the image tower's forward pass, on the same
preprocessed batches, for a model exported with ``mcip export --onnx`` (``mcip.export.export_onnx``).

Both run the whole image tower to unit embeddings on (B, 3, S, S) float32 batches already decoded and
transformed (decoding is the same code for both and is left out): PyTorch as ``mcip encode`` runs it
(``model.encode_image`` under inference mode, in the memory layout ``load_model`` chose), onnxruntime as
``mcip encode --runtime onnx`` runs it (``OnnxModel.run_image``, CPUExecutionProvider), both with the same
number of threads, onnxruntime's idle threads not spinning (they would take the cores from PyTorch's
next pass). The two alternate, ``--repeats`` times; each keeps its fastest pass.

    python benchmarks/onnx_encode.py                      # composed:lab at 128 px, lab emoji if prepared
    python benchmarks/onnx_encode.py --image-size 224     # the preset's own size
    python benchmarks/onnx_encode.py --model SPEC --n 512 --batch 64 --threads 2

Prints ``RESULT onnx_vs_torch_images_per_s X`` (onnxruntime / PyTorch) with no target: it is a report
for choosing a runtime, not a goal mcip can hold itself to, since the ratio is set by two third-party
kernel libraries (oneDNN in PyTorch, MLAS in onnxruntime), the CPU, the thread count and the network's
operators, and moves either way with any of them; deploying on onnxruntime is about dropping PyTorch,
not about speed. ``RESULT onnx_min_cosine X target >=0.9999``: the least cosine between the two
runtimes' embeddings of the same images, which does have a target (the export's parity bound).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mcip.data.dataset import decode_image
from mcip.export import MIN_COSINE, export_onnx, least_cosine, load_onnx_model
from mcip.models import load_model

LAB_IMAGES = Path.home() / ".cache" / "mcip" / "lab" / "images"


def pixels_for(model, images: Path | None, n: int) -> tuple[torch.Tensor, str]:
    """(n, 3, S, S) preprocessed pixels of the images under ``images`` (cycled to n), or of random noise
    when there are none; and what they are."""
    from mcip.data.images import find_images

    paths = find_images(images)[:n] if images is not None and images.is_dir() else []
    decoded = [decode_image(p, model.eval_transform, str(p)) for p in paths]
    decoded = [d for d in decoded if not isinstance(d, str)]
    if not decoded:
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, 3, model.image_size, model.image_size, generator=g), "random pixels"
    pixels = torch.stack([decoded[i % len(decoded)] for i in range(n)])
    return pixels, f"{len(decoded)} images from {images}"


@torch.inference_mode()
def torch_pass(model, pixels: torch.Tensor, batch: int) -> tuple[float, np.ndarray]:
    """(seconds, (N, D) embeddings) of one pass of ``model.encode_image`` over ``pixels``."""
    start = time.perf_counter()
    out = [model.encode_image(pixels[lo : lo + batch]) for lo in range(0, len(pixels), batch)]
    return time.perf_counter() - start, torch.cat(out).float().numpy()


def onnx_pass(runtime, pixels: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    """(seconds, (N, D) embeddings) of one pass of the exported image graph over ``pixels``."""
    start = time.perf_counter()
    out = [runtime.run_image(pixels[lo : lo + batch]) for lo in range(0, len(pixels), batch)]
    return time.perf_counter() - start, np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="composed:lab")
    p.add_argument("--image-size", type=int, default=128, help="composed:lab's image size (128, the lab's)")
    p.add_argument(
        "--images", type=Path, default=LAB_IMAGES, help="images to preprocess (default: the lab's)"
    )
    p.add_argument(
        "--export", type=Path, help="an existing export of --model (default: export to a temp dir)"
    )
    p.add_argument("--n", type=int, default=256, help="images per pass")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads of both runtimes")
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> int:
    model = load_model(
        args.model, **({"image_size": args.image_size} if args.model == "composed:lab" else {})
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.export or Path(tmp) / "export"
        if args.export is None:
            export_onnx(model, folder)
        runtime = load_onnx_model(folder, threads=args.threads, spinning=False)  # no idle spinning
        pixels, what = pixels_for(model, args.images, args.n)
        pixels_np = pixels.contiguous().numpy()
        torch_pass(model, pixels[: args.batch], args.batch)  # warm-up
        onnx_pass(runtime, pixels_np[: args.batch], args.batch)
        torch_s, onnx_s = [], []
        for _ in range(args.repeats):
            seconds, torch_emb = torch_pass(model, pixels, args.batch)
            torch_s.append(seconds)
            seconds, onnx_emb = onnx_pass(runtime, pixels_np, args.batch)
            onnx_s.append(seconds)
    torch_ips, onnx_ips = args.n / min(torch_s), args.n / min(onnx_s)
    cosine = least_cosine(onnx_emb, torch_emb)
    print(
        f"{args.model} at {model.image_size} px, {args.n} preprocessed images ({what}), batch {args.batch}, "
        f"{args.threads} threads, best of {args.repeats}: PyTorch {torch_ips:.1f} img/s, onnxruntime "
        f"{onnx_ips:.1f} img/s"
    )
    print(f"RESULT onnx_vs_torch_images_per_s {onnx_ips / torch_ips:.3f}")
    print(f"RESULT onnx_min_cosine {cosine:.6f} target >={MIN_COSINE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
