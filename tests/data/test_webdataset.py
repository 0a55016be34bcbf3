"""Webdataset-style shards: listing, writing, reading labels, streaming across ranks and workers."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mcip.data import (
    ImageRecord,
    ShardDataset,
    class_index,
    list_shards,
    open_image,
    read_image_folder,
    read_shard_records,
    write_shards,
)
from mcip.errors import ConfigError, InputError
from tests.data.conftest import png_bytes, to_pixels


def _key(pixels: torch.Tensor) -> bytes:
    return pixels.numpy().tobytes()


@pytest.fixture
def shards(tmp_path, image_folder):
    records = [
        ImageRecord(r.id, r.path, r.label, (f"a {r.label}", "shared"))
        for r in read_image_folder(image_folder)
    ]
    paths = write_shards(records, tmp_path / "shards", per_shard=2)
    by_pixels = {_key(to_pixels(open_image(r.path))): r.id for r in records}
    return records, paths, by_pixels


def test_list_shards_brace_ranges_lists_and_globs(tmp_path):
    for i in range(3):
        (tmp_path / f"s-{i:04d}.tar").write_bytes(b"")
    expect = [tmp_path / f"s-{i:04d}.tar" for i in range(3)]
    assert list_shards(str(tmp_path / "s-{0000..0002}.tar")) == expect
    assert list_shards(str(tmp_path / "s-{0000,0002}.tar")) == [expect[0], expect[2]]
    assert list_shards(str(tmp_path / "s-*.tar")) == expect
    assert list_shards([expect[1], expect[0]]) == [expect[1], expect[0]]
    with pytest.raises(InputError, match=r"s-0003\.tar"):
        list_shards(str(tmp_path / "s-{0000..0003}.tar"))
    with pytest.raises(InputError, match="No shards match"):
        list_shards(str(tmp_path / "x-*.tar"))


def test_read_shard_records_lists_labels_and_captions(shards):
    records, paths, _ = shards
    assert len(paths) == 6
    listed = read_shard_records(paths)
    assert sorted((r.id, r.label, r.captions) for r in listed) == sorted(
        (r.id, r.label, r.captions) for r in records
    )
    assert all(Path(str(r.path).rpartition("#")[0]) in paths for r in listed)


def _collect(paths, classes, rank, world, workers, **kwargs) -> list[dict]:
    ds = ShardDataset(paths, to_pixels, classes, rank=rank, world_size=world, seed=3, **kwargs)
    return list(DataLoader(ds, batch_size=None, num_workers=workers))


def test_every_sample_exactly_once_across_2_ranks_x_2_workers(shards):
    records, paths, by_pixels = shards
    classes = class_index(records)
    items = [it for rank in range(2) for it in _collect(paths, classes, rank, 2, 2, shuffle_buffer=3)]
    ids = [by_pixels[_key(it["pixels"])] for it in items]
    assert sorted(ids) == sorted(r.id for r in records)
    assert len({it["index"] for it in items}) == len(items)
    label_of = {r.id: classes[r.label] for r in records}
    assert all(it["label"] == label_of[i] for it, i in zip(items, ids, strict=True))


def test_epochs_are_deterministic_and_reshuffled(shards):
    records, paths, by_pixels = shards
    classes = class_index(records)
    ds = ShardDataset(paths, to_pixels, classes, seed=1)
    order = lambda: [by_pixels[_key(it["pixels"])] for it in ds]  # noqa: E731
    ds.set_epoch(0)
    first = order()
    assert order() == first
    ds.set_epoch(1)
    assert order() != first and sorted(order()) == sorted(first)


def test_skip_resumes_after_n_samples(shards):
    records, paths, _ = shards
    ds = ShardDataset(paths, to_pixels, class_index(records), seed=2)
    ds.set_epoch(4)
    full = [it["index"] for it in ds]
    ds.skip(5)
    assert [it["index"] for it in ds] == full[5:]
    ds.set_epoch(4)  # clears the skip
    assert [it["index"] for it in ds] == full


def test_classes_outside_class_to_index_are_left_out(shards):
    _, paths, _ = shards
    items = _collect(paths, {"bee": 0}, 0, 1, 0)
    assert len(items) == 4 and {it["label"] for it in items} == {0}


def _add(tar, name, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_bad_samples_and_a_damaged_shard_become_error_items(tmp_path):
    good = tmp_path / "good.tar"
    with tarfile.open(good, "w") as tar:
        _add(tar, "a.png", png_bytes(1))
        _add(tar, "a.json", json.dumps({"label": "x"}).encode())
        _add(tar, "b.png", b"not an image")
        _add(tar, "b.json", json.dumps({"label": "x"}).encode())
        _add(tar, "c.png", png_bytes(2))  # no json
        _add(tar, "d.json", b"{broken")
        _add(tar, "e.json", json.dumps({"label": "x"}).encode())  # no image
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(good.read_bytes()[:1500])
    ds = ShardDataset([good, damaged, tmp_path / "gone.tar"], to_pixels, {"x": 0}, shuffle_buffer=0)
    items = list(ds)
    ok = [it for it in items if "error" not in it]
    errors = [it["error"] for it in items if "error" in it]
    assert len(ok) >= 1 and ok[0]["pixels"].shape[0] == 3
    assert any("good.tar:b" in e for e in errors) and any("no c.json" in e for e in errors)
    assert any("bad d.json" in e for e in errors) and any("good.tar:e: no image" in e for e in errors)
    assert any("damaged.tar" in e for e in errors) and any("gone.tar: unreadable shard" in e for e in errors)


def test_repeat_cycles_past_the_end(shards):
    records, paths, _ = shards
    ds = ShardDataset(paths, to_pixels, class_index(records), repeat=True)
    stream = iter(ds)
    items = [next(stream) for _ in range(30)]
    assert len(items) == 30 and len({it["index"] for it in items}) == 30


def test_write_shards_leaves_out_missing_files(tmp_path, image_folder):
    recs = [*read_image_folder(image_folder)[:3], ImageRecord("gone", tmp_path / "gone.png", "ant")]
    with pytest.warns(UserWarning, match="1 of 4 images"):
        paths = write_shards(recs, tmp_path / "out", per_shard=10)
    assert len(read_shard_records(paths)) == 3
    assert not list(Path(tmp_path / "out").glob("*.tmp"))


def test_shard_dataset_validates_ranks(shards):
    _, paths, _ = shards
    with pytest.raises(ConfigError, match="every rank needs at least one"):
        ShardDataset(paths[:1], to_pixels, {}, rank=0, world_size=2)
    with pytest.raises(ConfigError, match="rank"):
        ShardDataset(paths, to_pixels, {}, rank=2, world_size=2)
