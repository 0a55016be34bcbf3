"""Robust datasets: bad images become reported skips, never exceptions (the training loop counts them)."""

from __future__ import annotations

import pytest
import torch

from mcip.data import (
    ImageDataset,
    ImageRecord,
    collate_images,
)
from mcip.errors import ConfigError
from tests.data.conftest import SIDE, to_pixels


def _dataset(bad_files) -> ImageDataset:
    names = ["good", "truncated", "corrupt", "missing"]
    recs = [ImageRecord(n, bad_files[n], "a" if n == "good" else "b") for n in names]
    return ImageDataset(recs, to_pixels)


def test_getitem_never_raises_on_bad_files(bad_files):
    ds = _dataset(bad_files)
    good = ds[0]
    assert good["pixels"].shape == (3, SIDE, SIDE) and good["label"] == 0 and good["index"] == 0
    for i, name in [(1, "truncated"), (2, "corrupt"), (3, "missing")]:
        item = ds[i]
        assert set(item) == {"index", "error"} and item["index"] == i
        assert item["error"].startswith(str(bad_files[name]) + ": ")
    assert "truncated" in ds[1]["error"]
    assert "FileNotFoundError" in ds[3]["error"]


def test_collate_keeps_readable_rows_and_reports_skips(bad_files):
    ds = _dataset(bad_files)
    batch = collate_images([ds[i] for i in [1, 0, 3, 0]])
    assert batch["pixels"].shape == (2, 3, SIDE, SIDE)
    assert batch["labels"].tolist() == [0, 0] and batch["labels"].dtype == torch.long
    assert batch["index"].tolist() == [0, 0] and batch["index"].dtype == torch.long
    assert [i for i, _ in batch["skipped"]] == [1, 3]


def test_collate_of_an_all_bad_batch_keeps_the_skips(bad_files):
    ds = _dataset(bad_files)
    batch = collate_images([ds[1], ds[2]])
    assert batch["pixels"] is None and batch["index"].shape == (0,) and batch["labels"].shape == (0,)
    assert len(batch["skipped"]) == 2


def test_unknown_label_is_a_config_error(bad_files):
    recs = [ImageRecord("g", bad_files["good"], "zebra")]
    with pytest.raises(ConfigError, match="zebra"):
        ImageDataset(recs, to_pixels, {"ant": 0})
