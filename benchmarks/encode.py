"""Image encoding against its limits, measured in one run on one machine: images/s of mcip's encoder path
(``mcip.embed.encode_images``, what ``mcip encode``, ``mcip index build`` and evaluation run) against

- the bare forward pass of the same network on pre-decoded tensors (the model's limit on this CPU), and
- decode-only: reading, decoding and transforming the same files with the same number of workers,

so the figure that matters is ``encode / min(forward-only, decode-only)``: target >= 0.85 (issue 16) where
decoding and the network run on separate resources, i.e. the network on a GPU (``--device cuda``, the
default when one is present). On a CPU both share the same cores and the bound is the serial one,
1 / (1/forward + 1/decode): every image is decoded and run through the network by the same CPUs, so
there the benchmark reports ``encode / serial bound`` without a target (issue 29) and prints no
``..._vs_limit`` line. Also the forward pass in the layout ``load_model`` chose (channels-last for a
convolutional tower) against the default (contiguous) layout, and with bf16 autocast (with the cosine
of its embeddings to fp32), each as a ratio, and JPEG draft decoding (opt-in, ``MCIP_JPEG_DRAFT=1``)
against full decoding (mcip's default): speed-up of decode-only and the least cosine between the
embeddings of the two. With ``torch.compile`` (opt-in, ``mcip encode --compile``; ``--no-compile``
skips it): the time to compile, the forward pass and ``mcip encode`` against the plain model, and the
least cosine to its embeddings. Every cosine target is issue 16's accuracy bar, >= 0.999.

    python benchmarks/encode.py                       # 512 synthetic 1600x1200 JPEG photos, composed:lab
    python benchmarks/encode.py --images ~/.cache/mcip/lab/images/google   # the lab's 64 px PNGs
    python benchmarks/encode.py --images DIR --model SPEC --workers 2 --n 1024

Ends with ``RESULT encode_vs_limit X target >=0.85`` (``encode_images``: mcip encode and evaluation),
``RESULT encode_workers_vs_limit`` and ``RESULT encode_index_build_vs_limit`` (``mcip index build``'s
encoder, decoding in worker processes) on a GPU, ``RESULT encode_vs_serial_bound X`` (and ``_workers_``)
on a CPU, and one line per variant.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from mcip.data.dataset import decode_image
from mcip.data.images import find_images
from mcip.embed import encode_images
from mcip.index.encode import encode_records
from mcip.index.records import IndexRecord
from mcip.models import load_model
from mcip.models.compiled import CompiledImageEncoder
from mcip.models.transforms import DRAFT_OVERSAMPLING, EvalTransform

TARGET = 0.85  # encode / min(forward-only, decode-only) where they run on separate resources (issue 16)
COSINE = 0.999  # issue 16's accuracy bar for a faster variant's embeddings against mcip's default path


class _Decode(Dataset):
    def __init__(self, paths, transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        out = decode_image(self.paths[i], self.transform, str(self.paths[i]))
        return out if not isinstance(out, str) else torch.zeros(3, 1, 1)


def _sync(model) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def decode_only(paths, transform, batch: int, workers: int) -> float:
    start = time.perf_counter()
    for _ in DataLoader(_Decode(paths, transform), batch_size=batch, num_workers=workers):
        pass
    return len(paths) / (time.perf_counter() - start)


@torch.inference_mode()
def compiled_forward(model, pixels: torch.Tensor, batch: int) -> tuple[float, float, torch.Tensor]:
    """(seconds to compile, images/s, embeddings) of the compiled image tower on pre-decoded ``pixels``."""
    encode = CompiledImageEncoder(model, batch)
    start = time.perf_counter()
    encode(pixels[:batch])  # compiles
    compile_s = time.perf_counter() - start
    outs = []
    start = time.perf_counter()
    for lo in range(0, len(pixels), batch):
        outs.append(encode(pixels[lo : lo + batch]).float())
    _sync(model)
    return compile_s, len(pixels) / (time.perf_counter() - start), torch.cat(outs)


@torch.inference_mode()
def forward_only(
    model, pixels: torch.Tensor, batch: int, channels_last: bool | None = None, bf16=False
) -> tuple[float, torch.Tensor]:
    """Images/s of ``model.encode_image`` on pre-decoded ``pixels`` and the embeddings; ``channels_last``
    None runs the layout ``load_model`` chose (mcip's path), True / False that layout for this run."""
    was = model.pixel_format is torch.channels_last
    if channels_last is not None:
        model.use_channels_last(channels_last)
    try:
        outs = []
        model.encode_image(pixels[:batch])  # warm-up
        start = time.perf_counter()
        for lo in range(0, len(pixels), batch):
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
                outs.append(model.encode_image(pixels[lo : lo + batch]).float())
        _sync(model)
        rate = len(pixels) / (time.perf_counter() - start)
    finally:
        model.use_channels_last(was)
    return rate, torch.cat(outs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--images",
        help="image folder (default: --n synthetic 1600x1200 JPEG photos written to a temporary folder)",
    )
    p.add_argument("--model", default="composed:lab")
    p.add_argument("--image-size", type=int, default=128, help="composed:lab's image size (128, the lab's)")
    p.add_argument("--n", type=int, default=512, help="images used")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the network runs (default: cuda when available)",
    )
    p.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip the torch.compile figures"
    )
    args = p.parse_args(argv)
    kwargs = {"image_size": args.image_size} if args.model == "composed:lab" else {}
    model = load_model(args.model, device=args.device, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        if args.images is None:
            args.images = synthetic_photos(Path(tmp) / "photos", args.n)
        return measure(model, find_images(args.images)[: args.n], args)


def synthetic_photos(folder: Path, n: int, size: tuple[int, int] = (1600, 1200)) -> str:
    """``n`` JPEG photos (quality 90) of smooth random colour fields with noise: what a camera or a
    product catalogue gives, at a size where decoding costs what it costs in practice."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    w, h = size
    for i in range(n):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
        noisy = np.clip(field + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:05d}.jpg", quality=90)
    return str(folder)


def measure(model, paths, args) -> int:
    transform = model.eval_transform  # what mcip decodes with (full decoding unless MCIP_JPEG_DRAFT=1)
    cfg = model.image_config
    draft_transform = EvalTransform(  # the same steps, JPEGs at the draft scale
        transform.transforms, DRAFT_OVERSAMPLING * round(cfg.resize_ratio * cfg.size)
    )
    pixels = torch.stack([_Decode(paths, transform)[i] for i in range(len(paths))])
    draft_pixels = torch.stack([_Decode(paths, draft_transform)[i] for i in range(len(paths))])

    decode = decode_only(paths, transform, args.batch, args.workers)
    decode_draft = decode_only(paths, draft_transform, args.batch, args.workers)
    forward, reference = forward_only(model, pixels, args.batch)
    start = time.perf_counter()
    encode_images(model, paths, batch_size=args.batch, progress=False)  # evaluation (decodes here)
    encode = len(paths) / (time.perf_counter() - start)
    start = time.perf_counter()  # mcip encode: decoding in --workers processes
    encode_images(model, paths, batch_size=args.batch, progress=False, num_workers=args.workers)
    encode_workers = len(paths) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:  # mcip index build: decoding in --workers processes
        records = [IndexRecord(str(i), Path(path)) for i, path in enumerate(paths)]
        start = time.perf_counter()
        encode_records(
            model, records, Path(tmp) / "staging", "bench", args.batch, args.workers, progress=False
        )
        index_build = len(paths) / (time.perf_counter() - start)
    limit = min(forward, decode)
    serial = 1 / (1 / forward + 1 / decode)
    layout = "channels_last" if model.pixel_format is torch.channels_last else "contiguous"
    contiguous, contiguous_emb = forward_only(model, pixels, args.batch, channels_last=False)
    layout_cosine = float(torch.nn.functional.cosine_similarity(contiguous_emb, reference).min())
    bf, bf_emb = forward_only(model, pixels, args.batch, bf16=True)
    cosine = float(torch.nn.functional.cosine_similarity(bf_emb, reference).min())
    _, draft_emb = forward_only(model, draft_pixels, args.batch)
    draft_cosine = float(torch.nn.functional.cosine_similarity(draft_emb, reference).min())
    if args.compile:
        compile_s, forward_compiled, compiled_emb = compiled_forward(model, pixels, args.batch)
        compiled_cosine = float(torch.nn.functional.cosine_similarity(compiled_emb, reference).min())
        # mcip encode --compile, its own compilation included (no_grad, not inference_mode: a second graph)
        start = time.perf_counter()
        encode_images(
            model, paths, batch_size=args.batch, progress=False, num_workers=args.workers, compile=True
        )
        encode_compiled = len(paths) / (time.perf_counter() - start)

    print(f"{args.model}, {len(paths)} images from {args.images}, batch {args.batch}, {args.workers} workers, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    print(f"decode-only {decode:.0f} img/s (JPEG draft decoding {decode_draft:.0f}), forward-only {forward:.0f} "
          f"img/s, serial bound {serial:.0f} img/s; evaluation (decoding here) {encode:.0f} img/s, mcip encode "
          f"({args.workers} workers) {encode_workers:.0f} img/s, index build ({args.workers} workers) "
          f"{index_build:.0f} img/s")  # fmt: skip
    print(f"forward in the layout mcip loads ({layout}) {forward:.0f} img/s, in the default (contiguous) "
          f"layout {contiguous:.0f} img/s ({forward / contiguous:.2f}x; min cosine {layout_cosine:.6f}); bf16 "
          f"autocast {bf:.0f} img/s ({bf / forward:.2f}x, min cosine to fp32 {cosine:.4f})")  # fmt: skip
    if args.compile:
        print(f"torch.compile: {compile_s:.1f} s to compile, then forward {forward_compiled:.0f} img/s "
              f"({forward_compiled / forward:.2f}x, min cosine {compiled_cosine:.6f}); mcip encode --compile "
              f"({args.workers} workers) {encode_compiled:.0f} img/s ({encode_compiled / encode_workers:.2f}x)")  # fmt: skip
    if model.device.type == "cuda":  # decoding (CPU) and the network (GPU) on separate resources
        print(f"RESULT encode_vs_limit {encode / limit:.2f} target >={TARGET}")
        print(f"RESULT encode_workers_vs_limit {encode_workers / limit:.2f} target >={TARGET}")
        print(f"RESULT encode_index_build_vs_limit {index_build / limit:.2f} target >={TARGET}")
    print(f"RESULT encode_vs_serial_bound {encode / serial:.2f}")
    print(f"RESULT encode_workers_vs_serial_bound {encode_workers / serial:.2f}")
    # >= 1.0 where mcip ships the variant for speed alone (an opt-in or a default): slower, it has no reason
    print(
        f"RESULT encode_jpeg_draft_decode_speedup {decode_draft / decode:.2f} target >=1.0"
    )  # MCIP_JPEG_DRAFT
    print(f"RESULT encode_jpeg_draft_min_cosine {draft_cosine:.4f} target >={COSINE}")
    # channels-last is load_model's default layout for convolutional towers because it is faster
    print(f"RESULT encode_forward_vs_contiguous_layout {forward / contiguous:.2f} target >=1.0")
    print(f"RESULT encode_layout_min_cosine {layout_cosine:.6f} target >={COSINE}")
    print(f"RESULT encode_bf16_vs_forward {bf / forward:.2f}")  # not shipped (fails the cosine bar): a report
    print(f"RESULT encode_bf16_min_cosine {cosine:.4f} target >={COSINE}")
    if args.compile:  # --compile is offered as a speed-up: its forward pass and encode must not be slower
        print(f"RESULT encode_compiled_forward_speedup {forward_compiled / forward:.2f} target >=1.0")
        print(f"RESULT encode_compiled_workers_speedup {encode_compiled / encode_workers:.2f} target >=1.0")
        print(f"RESULT encode_compiled_min_cosine {compiled_cosine:.6f} target >={COSINE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
