"""A real small index for the server tests: synthetic images encoded by a tiny random-weight model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

import mcip

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
PER_COLOUR = 5
ODD_NAME = "odd name #1 ?&%+.png"
COUNT = len(COLOURS) * PER_COLOUR + 1


def synthetic_image(colour: tuple[int, int, int], seed: int, size: int = 48):
    """A noisy ``colour`` square with a random darker rectangle (PIL image)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    x0, y0 = rng.integers(0, size // 2, 2)
    pixels[y0 : y0 + size // 3, x0 : x0 + size // 3] *= 0.4
    return Image.fromarray(pixels.astype(np.uint8))


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_images(root: Path) -> Path:
    """``root/<colour>/<i>.png`` (one JPEG per colour), one file whose name needs URL escaping, a text
    file that is not an image, and a file outside the folder; returns the image folder."""
    images = root / "images"
    for c, (name, colour) in enumerate(COLOURS.items()):
        (images / name).mkdir(parents=True)
        for i in range(PER_COLOUR):
            suffix = "jpg" if i == 0 else "png"
            synthetic_image(colour, seed=10 * c + i).save(images / name / f"{i}.{suffix}")
    synthetic_image(COLOURS["yellow"], seed=77).save(images / "yellow" / ODD_NAME)  # URL-hostile id
    (images / "notes.txt").write_text("not an image, not indexed")
    (root / "secret.txt").write_text("outside the indexed collection")
    return images


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_openclip, tmp_path_factory) -> Path:
    """The tiny open_clip model saved as an mcip model directory (so a fresh process can load it)."""
    torch.manual_seed(0)
    model = mcip.load_model(f"openclip:{tiny_openclip}")
    return mcip.save_model(model, tmp_path_factory.mktemp("serve_model") / "model")


@pytest.fixture(scope="session")
def index_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from mcip.index import build_index

    root = tmp_path_factory.mktemp("serve_data")
    images = write_images(root)
    out = root / "index"
    build_index(str(tiny_model_dir), images, out, progress=False)
    return out


@pytest.fixture(scope="session")
def search_index(index_dir):
    from mcip.index import SearchIndex

    return SearchIndex.open(index_dir)


@pytest.fixture(scope="session")
def app(search_index):
    from mcip.serve import create_app

    return create_app(search_index)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        yield client
