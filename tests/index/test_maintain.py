"""`mcip index remove` and `mcip index rebuild`: the right rows go, the kept ones keep their stored
embeddings bitwise, searches never return a removed image, a rebuild equals a fresh build with the new
model, the history keeps the lineage, and a SIGKILL at any point of a remove leaves the old or the new
version (never a mix)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mcip.cli import main
from mcip.errors import ConfigError, InputError
from mcip.index import SearchIndex, build_index
from mcip.index.maintain import rebuild_index, remove_from_index
from mcip.index.store import StoredIndex
from tests.index.helpers import unit


def _snapshot(index_dir):
    stored = StoredIndex(index_dir)
    try:
        return {i: np.asarray(stored.embeddings[r]).copy() for i, r in stored.row_of.items()}, dict(
            stored.manifest
        )
    finally:
        stored.close()


@pytest.mark.parametrize("factory", ["Flat", "IVF2,Flat"])
def test_remove_by_id_and_filter_keeps_the_other_rows_exactly(model_dir, photos, tmp_path, factory):
    build_index(model_dir, photos, tmp_path / "i", factory=factory, progress=False)
    before, _ = _snapshot(tmp_path / "i")
    summary = remove_from_index(tmp_path / "i", ["blue/0.png", "blue/1.png"], where=["label=red"])
    assert summary["removed"] == 2 + 8 and summary["count"] == 6
    after, manifest = _snapshot(tmp_path / "i")
    assert set(after) == {f"blue/{i}.png" for i in range(2, 8)}
    for i, vector in after.items():
        assert np.array_equal(vector, before[i])  # nothing re-encoded
    assert [h["op"] for h in manifest["history"]] == ["build", "remove"]
    assert manifest["history"][-1]["removed"] == 10 and manifest["factory"] == factory
    with SearchIndex.open(tmp_path / "i", load_model=False) as index:
        q = unit(np.random.default_rng(0).normal(size=index.dim)).astype(np.float32)
        hits = index.search_vector(q, k=50)
        assert {h.id for h in hits} == set(after)  # the backend holds exactly the kept rows


class Interrupt(Exception):
    pass


def test_remove_keeps_an_interrupted_add_s_staging_and_the_skipped_counts(model_dir, photos, tmp_path):
    """An add killed after 10 of its 40 rows, then a remove of other ids, then the add again: the add resumes
    at row 10 (its plan is keyed on its own new records and the model, which the remove does not change).
    The build's skipped-file count and list (photos/red/broken.png) survive the remove."""
    import mcip
    from mcip.index import add_to_index
    from tests.index.helpers import write_pngs

    build_index(model_dir, photos, tmp_path / "i", progress=False)
    write_pngs(tmp_path / "new", [f"n{i:02d}.png" for i in range(40)], seed=4, size=8)
    model = mcip.load_model(model_dir)
    encode, batches = model.encode_image, []

    def interrupted(pixels, *args, **kwargs):
        if len(batches) == 2:
            raise Interrupt
        batches.append(len(pixels))
        return encode(pixels, *args, **kwargs)

    model.encode_image = interrupted
    with pytest.raises(Interrupt):
        add_to_index(tmp_path / "i", tmp_path / "new", model=model, batch_size=5, progress=False)
    assert (tmp_path / ".i.staging" / "progress.json").is_file()
    model.encode_image = encode
    assert remove_from_index(tmp_path / "i", ["red/0.png"])["count"] == 15
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    assert manifest["skipped_unreadable"] == 1
    assert list(manifest["skipped_files"]) == [str((photos / "red" / "broken.png").resolve())]
    summary = add_to_index(tmp_path / "i", tmp_path / "new", model=model, batch_size=5, progress=False)
    assert summary["resumed_rows"] == 10 and summary["count"] == 55
    assert json.loads((tmp_path / "i" / "manifest.json").read_text())["skipped_unreadable"] == 1


@pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None, reason="qdrant-client not installed")
def test_remove_from_a_qdrant_index(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "q", backend="qdrant", progress=False)
    remove_from_index(tmp_path / "q", where=["label=blue"])
    with SearchIndex.open(tmp_path / "q", load_model=False) as index:
        q = unit(np.random.default_rng(1).normal(size=index.dim)).astype(np.float32)
        assert {h.metadata["label"] for h in index.search_vector(q, k=50)} == {"red"} and len(index) == 8


def test_remove_refuses_unknown_ids_and_emptying_the_index(model_dir, photos, tmp_path):
    build_index(model_dir, photos, tmp_path / "i", progress=False)
    with pytest.raises(InputError, match="not in"):
        remove_from_index(tmp_path / "i", ["nope.png"])
    summary = remove_from_index(tmp_path / "i", ["nope.png", "red/0.png"], missing_ok=True)
    assert summary["removed"] == 1 and summary["missing"] == ["nope.png"]
    with pytest.raises(ConfigError, match="delete the folder"):
        remove_from_index(tmp_path / "i", where=["label!=nothing"])
    with pytest.raises(ConfigError, match="Say what to remove"):
        remove_from_index(tmp_path / "i")
    history = json.loads((tmp_path / "i" / "manifest.json").read_text())["history"]
    assert summary["count"] == 15 and [h["op"] for h in history] == ["build", "remove"]
    assert remove_from_index(tmp_path / "i", where=["label=green"])["removed"] == 0  # nothing: no new version
    assert len(json.loads((tmp_path / "i" / "manifest.json").read_text())["history"]) == 2


def test_rebuild_with_a_new_model_equals_a_fresh_build_and_keeps_the_lineage(
    model_dir, other_model_dir, photos, tmp_path, capsys
):
    build_index(model_dir, photos, tmp_path / "i", factory="IVF2,Flat", progress=False)
    remove_from_index(tmp_path / "i", ["red/3.png"])
    old, old_manifest = _snapshot(tmp_path / "i")
    rebuild_index(tmp_path / "i", other_model_dir, out=tmp_path / "copy", progress=False)
    assert _snapshot(tmp_path / "i")[0].keys() == old.keys()  # --out leaves the source as it was
    summary = rebuild_index(tmp_path / "i", other_model_dir, progress=False)
    assert summary["count"] == 15 and summary["previous_model"] == str(model_dir.resolve())
    new, manifest = _snapshot(tmp_path / "i")
    with SearchIndex.open(tmp_path / "i", load_model=False) as index:
        records = list(index.iter_records())
    build_index(other_model_dir, records, tmp_path / "fresh", factory="IVF2,Flat", progress=False)
    fresh, fresh_manifest = _snapshot(tmp_path / "fresh")
    assert new.keys() == fresh.keys() and all(np.array_equal(new[i], fresh[i]) for i in new)
    assert manifest["image_fingerprint"] == fresh_manifest["image_fingerprint"]
    assert manifest["image_fingerprint"] != old_manifest["image_fingerprint"]
    assert manifest["factory"] == "IVF2,Flat" and manifest["created"] == old_manifest["created"]
    ops = [h["op"] for h in manifest["history"]]
    assert ops == ["build", "remove", "rebuild"]
    last = manifest["history"][-1]
    assert last["previous_model"] == str(model_dir.resolve()) and last["model"] == str(
        other_model_dir.resolve()
    )
    assert main(["index", "info", "--index", str(tmp_path / "i")]) == 0
    out = capsys.readouterr().out
    assert "rebuild" in out and f"(was {model_dir.resolve()})" in out and "remove" in out


def test_cli_remove_and_rebuild(model_dir, other_model_dir, photos, tmp_path, capsys):
    build_index(model_dir, photos, tmp_path / "i", progress=False)
    ids = tmp_path / "ids.txt"
    ids.write_text("red/0.png\nred/1.png\n\n", encoding="utf-8")
    assert (
        main(
            [
                "index",
                "remove",
                "--index",
                str(tmp_path / "i"),
                "--ids",
                str(ids),
                "--where",
                "label=blue",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["count"] == 6
    assert main(["index", "remove", "--index", str(tmp_path / "i"), "--id", "gone.png"]) == 2
    assert "not in" in capsys.readouterr().err
    args = ["index", "rebuild", "--index", str(tmp_path / "i"), "--model", str(other_model_dir), "--quiet"]
    assert main([*args, "--workers", "0"]) == 0
    assert "rebuild: 6 image(s)" in capsys.readouterr().out


KILL_SCRIPT = """
import os, sys, time
import mcip.index.write as write
from mcip.index.maintain import remove_from_index

def slow(fn):  # stretch each step of the write so that a kill can land inside it
    def wrapped(*args, **kwargs):
        time.sleep(0.2)
        out = fn(*args, **kwargs)
        time.sleep(0.2)
        return out
    return wrapped

for name in ("write_embeddings", "write_records", "write_json"):
    setattr(write, name, slow(getattr(write, name)))
rename = os.replace

def pausing_rename(src, dst, *args, **kwargs):  # swap_into_place: NAME -> .NAME.old, pause, new -> NAME
    rename(src, dst, *args, **kwargs)
    if os.path.basename(dst) == ".i.old":
        print("between", flush=True)
        time.sleep(0.5)

os.replace = pausing_rename
print("writing", flush=True)
remove_from_index(sys.argv[1], where=["label=red"])
print("done", flush=True)
"""


@pytest.mark.slow
def test_sigkill_at_random_points_of_a_remove_leaves_the_old_or_the_new_index(model_dir, photos, tmp_path):
    """A remove in a subprocess (each write step stretched, a pause between the two renames of its swap),
    killed 8 times: 4 times at a random moment of its write, 4 times between the two renames. Every time
    the index opens, consistent, with all 16 images or the 8 that are not red (after a kill between the
    renames: the old 16, put back from .i.old), and the next remove works (leftovers are cleaned up)."""
    rng = random.Random(0)
    build_index(model_dir, photos, tmp_path / "i", progress=False)
    outcomes = {"random": [], "between": []}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for trial in range(8):
        where = "between" if trial % 2 else "random"
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "i")],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "writing"
        if where == "between":
            assert proc.stdout.readline().strip() == "between"
            assert not (tmp_path / "i").exists() and (tmp_path / ".i.old").is_dir()  # really in between
        else:
            time.sleep(rng.uniform(0.0, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with SearchIndex.open(tmp_path / "i", load_model=False) as index:
            labels = {index.record(i).metadata["label"] for i in index.ids}
            assert (len(index), labels) in ((16, {"red", "blue"}), (8, {"blue"})), where
            outcomes[where].append(len(index))
        if outcomes[where][-1] == 8:  # put the red ones back for the next trial
            build_index(model_dir, photos, tmp_path / "i", progress=False)
    assert remove_from_index(tmp_path / "i", where=["label=red"])["count"] == 8
    assert outcomes["between"] == [16] * 4  # the old version, complete, back in place
    assert 16 in outcomes["random"]  # some kills landed before the swap (the old version stayed)


def test_reduced_dimension_index_is_kept_by_remove_and_refused_where_meaningless(model_dir, photos, tmp_path):
    """--dim K: the FAISS index holds K-d projections (uncentred SVD of the vectors), the float16 store the
    full embeddings; remove keeps the reduction; dim >= D and dim on Qdrant are refused before encoding."""
    import faiss

    build_index(model_dir, photos, tmp_path / "i", dim=4, progress=False)
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    assert manifest["backend_options"]["dim"] == 4 and manifest["dim"] == 16
    index = faiss.read_index(str(tmp_path / "i" / "faiss.index"))
    assert index.d == 16 and faiss.downcast_index(index.index).d == 4
    with SearchIndex.open(tmp_path / "i", load_model=False) as opened:
        emb = np.asarray(opened.embeddings, dtype=np.float32)
        # the projection is the top-4 right singular vectors of the stored vectors: scores are q P^T P x
        _, _, vt = np.linalg.svd(emb.astype(np.float64), full_matrices=False)
        p = vt[:4]
        q = emb[0]
        hits = opened.search_vector(q, k=5)
        approx = (emb @ p.T) @ (p @ q)
        assert [opened.row_of(h.id) for h in hits] == np.argsort(-approx, kind="stable")[:5].tolist()
    remove_from_index(tmp_path / "i", ["red/0.png"])
    assert json.loads((tmp_path / "i" / "manifest.json").read_text())["backend_options"]["dim"] == 4
    with pytest.raises(ConfigError, match="does not reduce"):
        build_index(model_dir, photos, tmp_path / "j", dim=16, progress=False)
    with pytest.raises(ConfigError, match="FAISS transform"):
        build_index(model_dir, photos, tmp_path / "k", dim=4, backend="qdrant", progress=False)
    assert not (tmp_path / "j").exists()


def test_add_replaces_an_indexed_image_whose_file_changed(model_dir, photos, tmp_path, capsys):
    """Records keep a content hash of the file as encoded; `index add` of the same folder after a file
    changed re-encodes that image only (its new embedding equals a fresh build's), keeps the others
    bitwise, and a second add finds nothing to do. The hash is not search metadata."""
    from mcip.index import add_to_index
    from tests.index.helpers import write_pngs

    build_index(model_dir, photos, tmp_path / "i", progress=False)
    before, _ = _snapshot(tmp_path / "i")
    with SearchIndex.open(tmp_path / "i", load_model=False) as index:
        assert all(r.content_hash and len(r.content_hash) == 32 for r in index.iter_records())
        assert "content_hash" not in index.search_by_id("red/2.png", k=1)[0].metadata
    write_pngs(photos, ["red/2.png"], seed=42)  # the same name, other pixels
    summary = add_to_index(tmp_path / "i", photos, progress=False)
    assert summary["replaced"] == 1 and summary["added"] == 0 and summary["count"] == 16
    after, manifest = _snapshot(tmp_path / "i")
    assert manifest["history"][-1] == {**manifest["history"][-1], "op": "add", "replaced": 1}
    assert not np.array_equal(after["red/2.png"], before["red/2.png"])
    assert all(np.array_equal(after[i], before[i]) for i in before if i != "red/2.png")
    build_index(model_dir, photos, tmp_path / "fresh", progress=False)
    assert np.array_equal(after["red/2.png"], _snapshot(tmp_path / "fresh")[0]["red/2.png"])
    again = add_to_index(tmp_path / "i", photos, progress=False)
    assert again["replaced"] == 0 and again["added"] == 0 and again["skipped_duplicates"] == 16


def test_add_does_not_reread_files_whose_size_and_time_are_unchanged(
    model_dir, photos, tmp_path, monkeypatch
):
    """A second add over a large folder must not hash every indexed file: only those whose size or
    modification time changed are read; a touched but identical file is read and kept (same hash)."""
    import os

    import mcip.index.build as build
    from mcip.index import add_to_index

    build_index(model_dir, photos, tmp_path / "i", progress=False)
    hashed = []
    real = build.file_hash
    monkeypatch.setattr(build, "file_hash", lambda p: hashed.append(str(p)) or real(p))
    assert add_to_index(tmp_path / "i", photos, progress=False)["skipped_duplicates"] == 16
    assert hashed == []
    os.utime(photos / "blue" / "3.png", ns=(1, 1))  # touched, same bytes
    summary = add_to_index(tmp_path / "i", photos, progress=False)
    assert [os.path.basename(p) for p in hashed] == ["3.png"] and summary["replaced"] == 0
