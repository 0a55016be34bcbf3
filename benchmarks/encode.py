"""Image encoding against its limits, measured in one run on one machine: images/s of mcip's encoder path
(``mcip.embed.encode_images``, what ``mcip encode``, ``mcip index build`` and evaluation run) against

- the bare forward pass of the same network on pre-decoded tensors (the model's limit on this CPU), and
- decode-only: reading, decoding and transforming the same files with the same number of workers,

so the figure that matters is ``encode / min(forward-only, decode-only)`` (target >= 0.85). Also the
forward pass with ``channels_last`` and with bf16 autocast (with the cosine of its embeddings to fp32),
each as a ratio to the plain forward pass.

    python benchmarks/encode.py --images ~/.cache/mcip/lab/images/google   # the lab's images, composed:lab
    python benchmarks/encode.py --images DIR --model SPEC --workers 2 --n 1024

Ends with ``RESULT encode_vs_limit X target >=0.85`` (``encode_images``: mcip encode and evaluation),
``RESULT encode_index_build_vs_limit`` (``mcip index build``'s encoder, decoding in worker processes) and
one line per variant.
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

TARGET = 0.85


class _Decode(Dataset):
    def __init__(self, paths, transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        out = decode_image(self.paths[i], self.transform, str(self.paths[i]))
        return out if not isinstance(out, str) else torch.zeros(3, 1, 1)


def decode_only(paths, transform, batch: int, workers: int) -> float:
    start = time.perf_counter()
    for _ in DataLoader(_Decode(paths, transform), batch_size=batch, num_workers=workers):
        pass
    return len(paths) / (time.perf_counter() - start)


@torch.inference_mode()
def forward_only(
    model, pixels: torch.Tensor, batch: int, channels_last=False, bf16=False
) -> tuple[float, torch.Tensor]:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    outs = []
    model.encode_image(pixels[:batch])  # warm-up
    start = time.perf_counter()
    for lo in range(0, len(pixels), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outs.append(model.encode_image(pixels[lo : lo + batch]).float())
    rate = len(pixels) / (time.perf_counter() - start)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    return rate, torch.cat(outs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--model", default="composed:lab")
    p.add_argument("--image-size", type=int, default=128, help="composed:lab's image size (128, the lab's)")
    p.add_argument("--n", type=int, default=512, help="images used")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    kwargs = {"image_size": args.image_size} if args.model == "composed:lab" else {}
    model = load_model(args.model, **kwargs)
    paths = find_images(args.images)[: args.n]
    transform = model.eval_transform
    pixels = torch.stack([_Decode(paths, transform)[i] for i in range(len(paths))])

    decode = decode_only(paths, transform, args.batch, args.workers)
    forward, reference = forward_only(model, pixels, args.batch)
    start = time.perf_counter()
    encode_images(model, paths, batch_size=args.batch, progress=False)  # mcip encode / evaluation
    encode = len(paths) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:  # mcip index build: decoding in --workers processes
        records = [IndexRecord(str(i), Path(path)) for i, path in enumerate(paths)]
        start = time.perf_counter()
        encode_records(
            model, records, Path(tmp) / "staging", "bench", args.batch, args.workers, progress=False
        )
        index_build = len(paths) / (time.perf_counter() - start)
    limit = min(forward, decode)
    cl, _ = forward_only(model, pixels, args.batch, channels_last=True)
    bf, bf_emb = forward_only(model, pixels, args.batch, bf16=True)
    cosine = float(torch.nn.functional.cosine_similarity(bf_emb, reference).min())

    print(f"{args.model}, {len(paths)} images from {args.images}, batch {args.batch}, {args.workers} workers, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    print(f"decode-only {decode:.0f} img/s, forward-only {forward:.0f} img/s, mcip encode / eval "
          f"{encode:.0f} img/s, index build ({args.workers} workers) {index_build:.0f} img/s")  # fmt: skip
    print(f"channels_last forward {cl:.0f} img/s ({cl / forward:.2f}x), bf16 autocast {bf:.0f} img/s "
          f"({bf / forward:.2f}x, min cosine to fp32 {cosine:.4f})")  # fmt: skip
    print(f"RESULT encode_vs_limit {encode / limit:.2f} target >={TARGET}")
    print(f"RESULT encode_index_build_vs_limit {index_build / limit:.2f} target >={TARGET}")
    print(f"RESULT encode_channels_last_vs_forward {cl / forward:.2f} target >=1.0")
    print(f"RESULT encode_bf16_vs_forward {bf / forward:.2f} target >=1.0")
    print(f"RESULT encode_bf16_min_cosine {cosine:.4f} target >=0.999")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
