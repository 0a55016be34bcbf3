"""``mcip captions retrieve --engine ray``: the pool and the images encoded on Ray (``mcip.index.ray_engine``),
then the local path's selection: the same sidecar as the local path, resumable by shard. The tests that
start Ray are ``slow`` and share one local 2-CPU Ray session (this module's)."""

from __future__ import annotations

import json

import pytest
import torch

import mcip
from mcip.captions.retrieve import ray_staging, retrieve_captions
from mcip.cli import main
from mcip.data import load_records
from mcip.data.captions import read_caption_entries
from mcip.errors import ConfigError
from mcip.index import ray_engine
from mcip.index.ray_engine import RayOptions
from tests.index.helpers import write_pngs

POOL = [
    "a red square",
    "a green square",
    "a blue square",
    "noise on a grey wall",
    "a photo of a dog",
    "two cars in the rain",
    "a bright yellow field",
    "a red square",  # a duplicate: dropped by both paths
    "dark blue water",
    "a small green bird",
    "a plate of food",
    "an emoji of a smiling face",
]


@pytest.fixture(scope="module")
def model(tiny_openclip, tmp_path_factory):
    """The tiny open_clip model, saved and loaded from its folder (as Ray's actors receive it)."""
    torch.manual_seed(0)
    folder = mcip.save_model(mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path_factory.mktemp("m") / "m")
    return mcip.load_model(folder)


@pytest.fixture
def photos(tmp_path):
    """photos/{a,b}/i.png: 2 x 9 images, and one corrupt file photos/a/broken.png (in the middle)."""
    root = tmp_path / "photos"
    write_pngs(root, [f"{c}/{i}.png" for c in ("a", "b") for i in range(9)], seed=5)
    (root / "a" / "broken.png").write_bytes(b"this is not a png")
    return root


@pytest.fixture
def pool(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("\n".join(POOL) + "\n")
    return path


def _same_sidecar(a, b) -> None:
    """The same images, and per image the same captions in the same order, scores within 1e-6."""
    x, y = read_caption_entries(a), read_caption_entries(b)
    assert sorted(y) == sorted(x)
    for image_id, entries in x.items():
        assert [(e["text"], e["source"]) for e in y[image_id]] == [(e["text"], e["source"]) for e in entries]
        for e, f in zip(entries, y[image_id], strict=True):
            assert f["score"] == pytest.approx(e["score"], abs=1e-6)


# ---- fast: arguments, no Ray started


def test_ray_options_and_cache_dir_are_checked_before_any_work(model, photos, pool, tmp_path):
    records = load_records(photos)
    out = tmp_path / "caps.jsonl"
    with pytest.raises(ConfigError, match="choose one of local, ray"):
        retrieve_captions(model, records, pool, out, engine="spark", progress=False)
    with pytest.raises(ConfigError, match="need engine='ray'"):
        retrieve_captions(model, records, pool, out, ray_options=RayOptions(shard_size=8), progress=False)
    with pytest.raises(ConfigError, match="shard_size=6 is not a multiple of batch_size=4"):
        retrieve_captions(
            model, records, pool, out, engine="ray", ray_options=RayOptions(shard_size=6), batch_size=4
        )
    with pytest.raises(ConfigError, match="drop --cache-dir"):
        retrieve_captions(model, records, pool, out, engine="ray", cache_dir=tmp_path / "c", progress=False)
    assert not out.exists() and not ray_staging(out).exists()


def test_cli_refuses_ray_options_without_the_ray_engine_and_bad_shard_sizes(photos, pool, tmp_path, capsys):
    base = ["captions", "retrieve", "--images", str(photos), "--pool", str(pool), "--model", "no-such-model"]
    base += ["--out", str(tmp_path / "caps.jsonl")]
    assert main([*base, "--shard-size", "8"]) == 2
    assert "--shard-size configure --engine ray" in capsys.readouterr().err
    assert main([*base, "--engine", "ray", "--shard-size", "10", "--batch-size", "4"]) == 2
    assert "shard_size=10 is not a multiple of batch_size=4" in capsys.readouterr().err
    assert not (tmp_path / "caps.jsonl").exists()


# ---- slow: one local Ray cluster (2 CPUs) for the module


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_writes_the_local_sidecar_and_skips_the_unreadable_image(
    ray_session, model, photos, pool, tmp_path
):
    records = load_records(photos)
    kwargs = {"top_k": 3, "min_sim": -1.0, "progress": False, "batch_size": 4, "text_batch_size": 4}
    local = retrieve_captions(
        model, records, pool, tmp_path / "local.jsonl", cache_dir=tmp_path / "c", **kwargs
    )
    out = tmp_path / "ray.jsonl"
    ray = retrieve_captions(
        model, records, pool, out, engine="ray", ray_options=RayOptions(shard_size=8), **kwargs
    )
    assert ray.unreadable == local.unreadable == [str(photos / "a" / "broken.png")]
    for field in ("images", "pool_lines", "pool_unique", "captions_written", "without_captions"):
        assert getattr(ray, field) == getattr(local, field), field
    assert (local.pool_unique, local.captions_written) == (11, 3 * 18)
    _same_sidecar(tmp_path / "local.jsonl", out)
    assert not ray_staging(out).exists()


@pytest.mark.slow
def test_a_killed_job_redoes_only_its_unfinished_shards(
    ray_session, model, photos, pool, tmp_path, monkeypatch, capsys
):
    """Webdataset shards of the photos (the corrupt file a member too), read as the local path reads them;
    19 images in batches of 4, shards of 8 images: 3 image shards after the pool's one. The first run dies
    after writing 2 shards."""
    from mcip.data.shard_writer import shard_manifest

    shard_manifest(photos, tmp_path / "tars", shard_size=6, seed=0)
    images = str(tmp_path / "tars" / "*.tar")
    records = load_records(images)
    assert len(records) == 19 and all(".tar#" in str(r.path) for r in records)
    written = []
    write_shard = ray_engine.write_shard

    def dying(staging, shard, *args):
        if len(written) == 2:
            raise KeyboardInterrupt  # the job is killed here: the pool and the first image shard on disk
        write_shard(staging, shard, *args)
        written.append((staging.name, shard))

    monkeypatch.setattr(ray_engine, "write_shard", dying)
    out = tmp_path / "ray.jsonl"
    with pytest.raises(KeyboardInterrupt):
        retrieve_captions(model, records, pool, out, top_k=2, min_sim=-1.0, progress=False, batch_size=4,
                          engine="ray", ray_options=RayOptions(shard_size=8))  # fmt: skip
    assert written == [("pool", 0), ("images", 0)] and not out.exists()

    written.clear()
    monkeypatch.setattr(
        ray_engine, "write_shard", lambda *a: (write_shard(*a), written.append((a[0].name, a[1])))
    )
    args = ["captions", "retrieve", "--images", images, "--pool", str(pool), "--model", model.spec]
    args += ["--out", str(out), "--top-k", "2", "--min-sim", "-1", "--batch-size", "4"]
    assert main([*args, "--engine", "ray", "--shard-size", "8"]) == 0  # the same job, from the command line
    assert written == [("images", 1), ("images", 2)]  # the shards that were not on disk, and only those
    assert "19 images (0 already done, 1 unreadable)" in capsys.readouterr().out
    assert not ray_staging(out).exists()
    local = tmp_path / "local.jsonl"
    retrieve_captions(model, records, pool, local, top_k=2, min_sim=-1.0, progress=False, batch_size=4,
                      cache_dir=tmp_path / "c")  # fmt: skip
    _same_sidecar(local, out)
    assert json.loads(out.read_text().splitlines()[0])["captions"][0]["source"] == "retrieval:pool.txt"
