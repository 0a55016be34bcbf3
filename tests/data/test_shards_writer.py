"""``mcip data shard`` / ``shard_manifest``: the layout the shard readers read, the index, resume, and
shard member references (``SHARD.tar#KEY``) that open like files."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from mcip.cli import main
from mcip.data import ImageDataset, load_records, open_image
from mcip.data.images import read_image_bytes
from mcip.data.shard_ref import member_ref, split_member_ref
from mcip.data.shard_writer import INDEX_NAME, read_shard_index, shard_manifest
from mcip.data.webdataset import list_shards
from mcip.errors import InputError
from tests.data.conftest import png_bytes, to_pixels, write_png


def _manifest(root: Path, n: int = 7, missing: int | None = 3) -> Path:
    """``n`` PNGs in 2 classes with two captions each; row ``missing`` names an absent file."""
    rows = []
    for i in range(n):
        name = f"img{i}.png"
        if i != missing:
            write_png(root / name, seed=i)
        rows.append({"path": name, "label": f"c{i % 2}", "captions": [f"cap {i}", "shared"], "id": f"id{i}"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_member_refs_round_trip_and_leave_other_paths_alone(tmp_path):
    ref = member_ref(tmp_path / "a-0001.tar", "dir/000007")
    assert str(ref) == f"{tmp_path}/a-0001.tar#dir/000007"
    assert split_member_ref(ref) == (tmp_path / "a-0001.tar", "dir/000007")
    assert split_member_ref(tmp_path / "photo#1.png") is None  # a '#' in a plain file name
    assert split_member_ref(tmp_path / "x.tar") is None


def test_shards_hold_the_manifest_in_order_with_captions_and_the_skipped_file_listed(tmp_path):
    manifest = _manifest(tmp_path / "src")
    out = tmp_path / "shards"
    index = shard_manifest(manifest, out, shard_size=3, shuffle=False)
    names = ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert list(index["shards"]) == names
    # order 0..6; row 3 (missing) leaves key 3 unused in the second shard
    assert [index["shards"][n]["keys"] for n in names] == [
        ["000000000", "000000001", "000000002"],
        ["000000004", "000000005"],
        ["000000006"],
    ]
    assert [index["shards"][n]["count"] for n in names] == [3, 2, 1]
    assert index["samples"] == 6 and index["skipped_count"] == 1
    assert index["skipped"][0]["id"] == "id3" and "FileNotFoundError" in index["skipped"][0]["reason"]
    assert read_shard_index(out) == index
    with tarfile.open(out / names[0]) as tar:  # the webdataset layout: KEY.png next to KEY.json
        assert tar.getnames() == [f"00000000{i}.{e}" for i in range(3) for e in ("png", "json")]
        meta = json.loads(tar.extractfile("000000001.json").read())
        assert meta == {"id": "id1", "label": "c1", "captions": ["cap 1", "shared"]}
        assert tar.extractfile("000000001.png").read() == png_bytes(1)

    records = load_records(str(out / "shard-*.tar"))
    assert [(r.id, r.label, r.captions) for r in records] == [
        (f"id{i}", f"c{i % 2}", (f"cap {i}", "shared")) for i in (0, 1, 2, 4, 5, 6)
    ]
    assert records[3].path == member_ref(out / names[1], "000000004")
    assert read_image_bytes(records[3].path) == png_bytes(4)


def test_shuffled_order_is_seeded(tmp_path):
    manifest = _manifest(tmp_path / "src", missing=None)
    a = shard_manifest(manifest, tmp_path / "a", shard_size=4, seed=5)
    b = shard_manifest(manifest, tmp_path / "b", shard_size=4, seed=5)
    ids = [r.id for r in load_records(str(tmp_path / "a" / "shard-*.tar"))]
    assert a["shards"] == b["shards"]
    assert sorted(ids) == [f"id{i}" for i in range(7)] and ids != sorted(ids)
    assert ids == [r.id for r in load_records(str(tmp_path / "b" / "shard-*.tar"))]


def test_a_rerun_writes_only_the_shards_not_finished(tmp_path, monkeypatch):
    manifest = _manifest(tmp_path / "src", missing=None)
    out = tmp_path / "shards"
    import mcip.data.shard_writer as writer

    real, calls = writer._write_shard, []

    def dies_on_third(path, records, first_key):
        calls.append(path.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, records, first_key)

    monkeypatch.setattr(writer, "_write_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        shard_manifest(manifest, out, shard_size=2, shuffle=False)
    assert not (out / "shard-000002.tar").exists()  # atomic: no half shard
    assert read_shard_index(out)["complete"] is False
    first = (out / "shard-000000.tar").stat().st_mtime_ns

    calls.clear()
    index = shard_manifest(manifest, out, shard_size=2, shuffle=False)
    assert calls == ["shard-000002.tar", "shard-000003.tar"]
    assert (out / "shard-000000.tar").stat().st_mtime_ns == first
    assert index["complete"] is True and index["samples"] == 7
    with pytest.raises(InputError, match="another plan"):
        shard_manifest(manifest, out, shard_size=3, shuffle=False)


def test_records_from_shards_decode_as_the_files_do(tmp_path):
    manifest = _manifest(tmp_path / "src", missing=None)
    out = tmp_path / "shards"
    shard_manifest(manifest, out, shard_size=3, shuffle=False)
    from_files = load_records(manifest)
    from_shards = load_records(str(out / "shard-{000000..000002}.tar"))
    a = ImageDataset(from_files, to_pixels)
    b = ImageDataset(from_shards, to_pixels)
    for i in range(len(a)):
        assert a[i]["label"] == b[i]["label"]
        assert (a[i]["pixels"] == b[i]["pixels"]).all()
    assert open_image(from_shards[0].path).size == (24, 24)


def test_an_absent_member_or_damaged_shard_is_an_unreadable_item_not_a_crash(tmp_path):
    manifest = _manifest(tmp_path / "src", missing=None)
    out = tmp_path / "shards"
    shard_manifest(manifest, out, shard_size=7, shuffle=False)
    records = load_records(str(out / "shard-000000.tar"))
    from mcip.data import ImageRecord

    absent = ImageRecord("x", member_ref(out / "shard-000000.tar", "999999999"), "c0")
    assert "holds no sample" in ImageDataset([absent], to_pixels)[0]["error"]
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes((out / "shard-000000.tar").read_bytes()[:700])
    bad = ImageRecord("y", member_ref(damaged, "000000006"), "c0")
    assert "error" in ImageDataset([bad], to_pixels)[0]
    assert len(records) == 7


def test_cli_data_shard_writes_the_shards_and_the_index(tmp_path, capsys):
    manifest = _manifest(tmp_path / "src")
    out = tmp_path / "shards"
    assert main(["data", "shard", str(manifest), "--out", str(out), "--shard-size", "4", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 6 samples in 2 shard(s)" in printed and "skipped 1 unreadable" in printed
    assert [p.name for p in list_shards(str(out / "shard-*.tar"))] == ["shard-000000.tar", "shard-000001.tar"]
    assert json.loads((out / INDEX_NAME).read_text())["plan"]["seed"] == 1
    assert main(["data", "shard", str(tmp_path / "nope.csv"), "--out", str(out)]) == 2
