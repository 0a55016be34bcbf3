"""Fixtures for the index tests: a tiny saved open_clip model (and a different one), synthetic PNG folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mcip
from tests.index.helpers import write_pngs


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_faiss():
    """Tiny indexes gain nothing from FAISS's OpenMP threads, and on shared CPUs their spin-waiting makes
    training several times slower; the index tests run FAISS on one thread."""
    faiss = pytest.importorskip("faiss")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="session")
def model_dir(tiny_openclip, tmp_path_factory) -> Path:
    """A tiny random-weight open_clip model saved as an mcip model directory (reloads identically)."""
    torch.manual_seed(0)
    return mcip.save_model(
        mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path_factory.mktemp("m") / "model"
    )


@pytest.fixture(scope="session")
def other_model_dir(tiny_openclip, tmp_path_factory) -> Path:
    """Same architecture, other weights."""
    torch.manual_seed(1)
    return mcip.save_model(
        mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path_factory.mktemp("o") / "model"
    )


@pytest.fixture(scope="session")
def model(model_dir):
    return mcip.load_model(model_dir)


@pytest.fixture
def photos(tmp_path) -> Path:
    """photos/{red,blue}/i.png: 2 x 8 images, plus one corrupt file photos/red/broken.png."""
    root = tmp_path / "photos"
    write_pngs(root, [f"{c}/{i}.png" for c in ("red", "blue") for i in range(8)])
    (root / "red" / "broken.png").write_bytes(b"this is not a png")
    return root
