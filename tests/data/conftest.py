"""Synthetic images for the data tests: good PNGs, a truncated one, a corrupt one, a missing path."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SIDE = 8


def png_bytes(seed: int = 0, size: int = 24) -> bytes:
    """A noisy RGB PNG (noise keeps it large enough to truncate meaningfully)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(seed))
    return path


def to_pixels(img) -> torch.Tensor:
    """The test transform: PIL image -> (3, SIDE, SIDE) float tensor."""
    arr = np.asarray(img.convert("RGB").resize((SIDE, SIDE)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """One good, one truncated (first 100 bytes), one corrupt (random bytes) and one missing file."""
    good = write_png(tmp_path / "good.png", 1)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png_bytes(2)[:100])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(os.urandom(256))
    return {"good": good, "truncated": truncated, "corrupt": corrupt, "missing": tmp_path / "missing.png"}


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/CLASS/i.png: 3 classes x 4 images."""
    root = tmp_path / "folder"
    for c, name in enumerate(["ant", "bee", "cat"]):
        for i in range(4):
            write_png(root / name / f"{i}.png", seed=10 * c + i)
    return root
