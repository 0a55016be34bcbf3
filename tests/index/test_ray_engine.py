"""``--engine ray`` (mcip.index.ray_engine): the same index and embeddings as the local path, resumable by
shard. The tests that start Ray are ``slow`` and share one local 2-CPU Ray session (this module's)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from mcip.cli import main
from mcip.errors import ConfigError, MissingDependencyError
from mcip.index import SearchIndex, add_to_index, build_index, ray_engine
from mcip.index.ray_engine import RayOptions, check_engine, run_sharded
from tests.index.helpers import write_pngs


def _lab_root() -> Path:
    return Path(os.environ.get("MCIP_LAB_DIR") or Path.home() / ".cache" / "mcip" / "lab")


# ---- fast: options and errors, no Ray started


def test_shard_size_must_hold_whole_batches():
    assert RayOptions().shard_rows(64) == 4096
    assert RayOptions().shard_rows(100) == 4100  # 41 batches: the multiple nearest above 4096
    assert RayOptions(shard_size=12).shard_rows(4) == 12
    with pytest.raises(ConfigError, match="not a multiple of batch_size=4"):
        RayOptions(shard_size=10).shard_rows(4)


@pytest.mark.parametrize("kwargs", [{"shard_size": 0}, {"actors": -1}, {"num_cpus": 1.5}, {"actors": True}])
def test_bad_ray_options_fail_at_construction(kwargs):
    with pytest.raises(ConfigError, match="positive integer"):
        RayOptions(**kwargs)


def test_engine_names_and_options_are_checked():
    check_engine("local", None)
    check_engine("ray", RayOptions())
    with pytest.raises(ConfigError, match="choose one of local, ray"):
        check_engine("spark", None)
    with pytest.raises(ConfigError, match="need engine='ray'"):
        check_engine("local", RayOptions(shard_size=64))
    with pytest.raises(ConfigError, match="drop one"):
        RayOptions(address="auto", num_cpus=2)


def test_cli_refuses_ray_options_without_the_ray_engine(model_dir, photos, tmp_path, capsys):
    args = [
        "index",
        "build",
        "--model",
        str(model_dir),
        "--images",
        str(photos),
        "--out",
        str(tmp_path / "i"),
    ]
    assert main([*args, "--shard-size", "64", "--quiet"]) == 2
    assert "--shard-size configure --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def test_missing_ray_names_the_extra(model, photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as when it is not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'mcip\[ray\]'"):
        run_sharded(model, sorted(photos.rglob("*.png")), tmp_path / "s", "k", 4, progress=False)


# ---- slow: one local Ray cluster (2 CPUs) for the module


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _same_index(a: Path, b: Path, queries: int = 20) -> None:
    """Ids, stored vectors (float16, within 1e-6) and search results of two index folders are equal."""
    with SearchIndex.open(a, load_model=False) as x, SearchIndex.open(b, load_model=False) as y:
        assert x.ids == y.ids
        ex, ey = np.asarray(x.embeddings, np.float32), np.asarray(y.embeddings, np.float32)
        np.testing.assert_allclose(ey, ex, rtol=0, atol=1e-6)
        step = max(1, len(ex) // queries)
        for hx, hy in zip(
            x.search_vectors(ex[::step], k=10), y.search_vectors(ey[::step], k=10), strict=True
        ):
            assert [h.id for h in hy] == [h.id for h in hx]
            assert [h.score for h in hy] == [h.score for h in hx]
    mx, my = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    for key in ("count", "skipped_unreadable", "factory", "backend", "image_fingerprint"):
        assert my[key] == mx[key], key
    assert _unaddressed(my["skipped_files"]) == _unaddressed(mx["skipped_files"])


def _unaddressed(skipped: dict) -> dict:
    """PIL names an in-memory file (a shard member) by its object's address: not the same in two runs."""
    return {path: re.sub(r" at 0x[0-9a-f]+", "", error) for path, error in skipped.items()}


def _lab_test_manifest(tmp_path: Path) -> Path:
    """The lab's test split (``mcip lab prepare``'s data, if this machine has it; else 24 synthetic PNGs)
    with one corrupt file added, as a JSONL manifest of absolute paths."""
    root = _lab_root()
    rows = []
    if (root / "manifest.jsonl").is_file():
        for line in (root / "manifest.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row.get("split") == "test":
                rows.append({"id": row["id"], "path": str(root / row["path"]), "label": row["label"]})
    if not rows:
        paths = write_pngs(tmp_path / "synthetic", [f"c{i % 3}/{i}.png" for i in range(24)], seed=3)
        rows = [{"id": p.name, "path": str(p), "label": p.parent.name} for p in paths]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows.insert(len(rows) // 2, {"id": "broken", "path": str(broken), "label": "none"})
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


@pytest.mark.slow
def test_lab_test_split_indexes_as_the_local_path(ray_session, model_dir, tmp_path):
    manifest = _lab_test_manifest(tmp_path)
    local = build_index(model_dir, manifest, tmp_path / "local", progress=False)
    ray = build_index(
        model_dir, manifest, tmp_path / "ray", progress=False, engine="ray",
        ray_options=RayOptions(shard_size=512),
    )  # fmt: skip
    assert ray["skipped_unreadable"] == local["skipped_unreadable"] == 1
    assert ray["skipped_files"] == local["skipped_files"]
    assert ray["count"] == local["count"]
    _same_index(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_a_killed_job_redoes_only_its_unfinished_shards(
    ray_session, model_dir, photos, tmp_path, monkeypatch, capsys
):
    """17 files in batches of 4, shards of 4 records: 5 shards. The first run dies after writing 2."""
    written = []
    write_shard = ray_engine.write_shard

    def dying(staging, shard, *args):
        if len(written) == 2:
            raise KeyboardInterrupt  # the job is killed here: 2 shards on disk
        write_shard(staging, shard, *args)
        written.append(shard)

    monkeypatch.setattr(ray_engine, "write_shard", dying)
    options = RayOptions(shard_size=4)
    with pytest.raises(KeyboardInterrupt):
        build_index(model_dir, photos, tmp_path / "ray", batch_size=4, progress=False, engine="ray",
                    ray_options=options)  # fmt: skip
    staging = tmp_path / ".ray.staging"
    assert sorted(p.name for p in (staging / "shards").iterdir()) == ["000000.npz", "000001.npz"]

    written.clear()
    monkeypatch.setattr(ray_engine, "write_shard", lambda *a: (write_shard(*a), written.append(a[1])))
    args = [
        "index",
        "build",
        "--model",
        str(model_dir),
        "--images",
        str(photos),
        "--out",
        str(tmp_path / "ray"),
    ]
    args += ["--batch-size", "4", "--engine", "ray", "--shard-size", "4", "--quiet", "--json"]
    capsys.readouterr()
    assert main(args) == 0  # the same job again, from the command line
    summary = json.loads(capsys.readouterr().out)
    assert written == [2, 3, 4]  # the shards that were not on disk, and only those
    assert summary["resumed_rows"] == 8 and summary["skipped_unreadable"] == 1
    assert not staging.exists()
    build_index(model_dir, photos, tmp_path / "local", batch_size=4, progress=False)
    _same_index(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_ivf_index_and_add_match_the_local_path(ray_session, model_dir, photos, tmp_path):
    """A trained FAISS structure (IVF, trained on a sample with the stored seed) and an add."""
    for engine in ("local", "ray"):
        build_index(model_dir, photos, tmp_path / engine, factory="IVF2,Flat", batch_size=4, progress=False,
                    engine=engine)  # fmt: skip
    _same_index(tmp_path / "local", tmp_path / "ray")
    write_pngs(photos, ["green/0.png", "green/1.png", "green/2.png"], seed=11)
    (photos / "green" / "bad.png").write_bytes(b"not an image")
    added = {
        e: add_to_index(tmp_path / e, photos, batch_size=4, progress=False, engine=e)
        for e in ("local", "ray")
    }
    assert added["ray"]["added"] == added["local"]["added"] == 3
    assert added["ray"]["skipped_unreadable"] == added["local"]["skipped_unreadable"] == 2
    _same_index(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_qdrant_points_and_payloads_match_the_local_path(ray_session, model_dir, photos, tmp_path):
    qdrant_client = pytest.importorskip("qdrant_client")
    for engine in ("local", "ray"):
        build_index(model_dir, photos, tmp_path / engine, backend="qdrant", batch_size=4, progress=False,
                    engine=engine)  # fmt: skip
    _same_index(tmp_path / "local", tmp_path / "ray")
    points = {}
    for engine in ("local", "ray"):
        state = json.loads((tmp_path / engine / "manifest.json").read_text())["backend_state"]
        client = qdrant_client.QdrantClient(path=str(tmp_path / engine / "qdrant"))
        try:
            got, _ = client.scroll(
                state["physical_collection"], limit=100, with_payload=True, with_vectors=True
            )
        finally:
            client.close()
        points[engine] = sorted((p.id, p.payload, p.vector) for p in got)
    assert [(i, p) for i, p, _ in points["ray"]] == [(i, p) for i, p, _ in points["local"]]
    assert len(points["ray"]) == 16
    np.testing.assert_allclose(
        [v for *_, v in points["ray"]], [v for *_, v in points["local"]], rtol=0, atol=1e-6
    )


@pytest.mark.slow
def test_mcip_encode_with_the_ray_engine_writes_the_local_output(ray_session, model_dir, photos, tmp_path):
    base = ["encode", "--model", str(model_dir), "--images", str(photos), "--batch-size", "4", "--quiet"]
    base += ["--neighbours", "0", "--workers", "0"]
    assert main([*base, "--out", str(tmp_path / "local")]) == 0
    assert main([*base, "--out", str(tmp_path / "ray"), "--engine", "ray", "--shard-size", "8"]) == 0
    local, ray = tmp_path / "local", tmp_path / "ray"
    np.testing.assert_array_equal(np.load(ray / "embeddings.npy"), np.load(local / "embeddings.npy"))
    assert (ray / "images.txt").read_text() == (local / "images.txt").read_text()
    summaries = [json.loads((p / "summary.json").read_text()) for p in (local, ray)]
    for key in ("images", "skipped", "skipped_files", "folder_1nn_accuracy"):
        assert summaries[1][key] == summaries[0][key]
    assert summaries[1]["skipped"] == 1
    assert not (ray / ".ray-staging").exists()


@pytest.mark.slow
def test_webdataset_shards_index_as_the_local_path(ray_session, model_dir, photos, tmp_path):
    """Shards written by ``mcip data shard``: Ray's tasks read the members ``SHARD.tar#KEY`` as files."""
    from mcip.data.shard_writer import shard_manifest

    shard_manifest(photos, tmp_path / "shards", shard_size=5, seed=0)
    source = str(tmp_path / "shards" / "*.tar")
    for engine in ("local", "ray"):
        build_index(model_dir, source, tmp_path / engine, batch_size=4, progress=False, engine=engine,
                    **({"ray_options": RayOptions(shard_size=8)} if engine == "ray" else {}))  # fmt: skip
    _same_index(tmp_path / "local", tmp_path / "ray")
    with SearchIndex.open(tmp_path / "ray", load_model=False) as index:
        assert len(index) == 16 and all(".tar#" in str(r.path) for r in index.iter_records())
