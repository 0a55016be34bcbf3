"""Interrupted builds resume without re-encoding; failed writes leave the previous index usable."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import mcip
from mcip.index import SearchIndex, add_to_index, build_index
from mcip.index.backends.faiss_backend import FaissBackend
from tests.index.helpers import write_pngs


class Interrupt(Exception):
    pass


def _count_batches(monkeypatch, model, fail_after: int | None = None) -> list[int]:
    """Wrap ``model.encode_image``: record each batch size; raise Interrupt on batch ``fail_after + 1``."""
    calls: list[int] = []
    original = model.encode_image

    def encode(pixels, *args, **kwargs):
        if fail_after is not None and len(calls) == fail_after:
            raise Interrupt("killed")
        calls.append(len(pixels))
        return original(pixels, *args, **kwargs)

    monkeypatch.setattr(model, "encode_image", encode)
    return calls


def test_interrupted_build_resumes_without_re_encoding(model_dir, photos, tmp_path, monkeypatch):
    model = mcip.load_model(model_dir)
    calls = _count_batches(monkeypatch, model, fail_after=2)
    with pytest.raises(Interrupt):
        build_index(model, photos, tmp_path / "index", batch_size=4, progress=False)
    staging = tmp_path / ".index.staging"
    assert json.loads((staging / "progress.json").read_text())["rows"] == 8
    assert not (tmp_path / "index").exists()

    monkeypatch.undo()
    calls = _count_batches(monkeypatch, model)
    summary = build_index(model, photos, tmp_path / "index", batch_size=4, progress=False)
    assert summary["resumed_rows"] == 8
    assert sum(calls) == 17 - 8 - 1  # the 9 rows left (one of them the corrupt file, never encoded)
    assert summary["count"] == 16 and summary["skipped_unreadable"] == 1
    assert not staging.exists()

    monkeypatch.undo()
    build_index(model, photos, tmp_path / "fresh", batch_size=4, progress=False)
    with SearchIndex.open(tmp_path / "index") as a, SearchIndex.open(tmp_path / "fresh") as b:
        assert a.ids == b.ids
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        assert [h.id for h in a.search(text="a red dog")] == [h.id for h in b.search(text="a red dog")]


def test_unreadable_images_found_before_an_interruption_are_still_counted(
    model_dir, photos, tmp_path, monkeypatch
):
    model = mcip.load_model(model_dir)
    _count_batches(monkeypatch, model, fail_after=3)  # rows 0..11 done, red/broken.png (row 8) among them
    with pytest.raises(Interrupt):
        build_index(model, photos, tmp_path / "index", batch_size=4, progress=False)
    monkeypatch.undo()
    summary = build_index(model, photos, tmp_path / "index", batch_size=4, progress=False)
    assert summary["resumed_rows"] == 12 and summary["skipped_unreadable"] == 1


def test_staging_of_other_inputs_is_discarded_with_a_warning(model_dir, photos, tmp_path, monkeypatch):
    model = mcip.load_model(model_dir)
    _count_batches(monkeypatch, model, fail_after=1)
    with pytest.raises(Interrupt):
        build_index(model, photos, tmp_path / "index", batch_size=4, progress=False)
    monkeypatch.undo()
    (photos / "blue" / "0.png").unlink()
    with pytest.warns(UserWarning, match="starting over"):
        summary = build_index(model, photos, tmp_path / "index", batch_size=4, progress=False)
    assert summary["resumed_rows"] == 0 and summary["count"] == 15


def test_failed_rebuild_leaves_the_previous_index_usable(model_dir, photos, tmp_path, monkeypatch):
    build_index(model_dir, photos, tmp_path / "index", progress=False)
    with SearchIndex.open(tmp_path / "index") as index:
        before = [h.id for h in index.search(text="a red dog")]

    def broken_build(self, folder, vectors, ids):
        (folder / "faiss.index").write_bytes(b"half")
        raise OSError("disk full")

    write_pngs(photos, ["green/0.png", "green/1.png"], seed=5)
    monkeypatch.setattr(FaissBackend, "build", broken_build)
    with pytest.raises(OSError, match="disk full"):
        build_index(model_dir, photos, tmp_path / "index", progress=False)
    monkeypatch.undo()
    with SearchIndex.open(tmp_path / "index") as index:
        assert len(index) == 16 and [h.id for h in index.search(text="a red dog")] == before
    siblings = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".index"))
    assert siblings == [".index.lock", ".index.staging"]  # the lock file stays (mcip.index.lock)
    summary = build_index(model_dir, photos, tmp_path / "index", progress=False)  # reuses the encoded rows
    assert summary["resumed_rows"] == 19 and summary["count"] == 18


def test_failed_add_leaves_the_index_unchanged(model_dir, photos, tmp_path, monkeypatch):
    build_index(model_dir, photos, tmp_path / "index", progress=False)
    write_pngs(tmp_path / "more", ["x.png"], seed=9)
    monkeypatch.setattr(FaissBackend, "append", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        add_to_index(tmp_path / "index", tmp_path / "more", progress=False)
    monkeypatch.undo()
    with SearchIndex.open(tmp_path / "index") as index:
        assert len(index) == 16 and not index.has("x.png")


def test_a_crash_between_the_two_renames_is_repaired_on_open(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "index", progress=False)
    os.replace(tmp_path / "index", tmp_path / ".index.old")  # the state after the first rename
    with SearchIndex.open(tmp_path / "index") as index:
        assert len(index) == 16
    assert not (tmp_path / ".index.old").exists()
