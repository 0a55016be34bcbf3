"""``prepare_lab`` end to end on fake npm archives with the real layout (offline)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from mcip.data.records import ImageRecord
from mcip.errors import MCIPError
from mcip.lab import LabData, lab_records, prepare_lab, read_lab_manifest
from mcip.lab.emoji import normalize_code
from mcip.lab.split import assign_splits
from tests.lab.fakes import COLORS, npm_calls, write_fake_npm, write_store


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "store")


@pytest.fixture
def npm(store: Path) -> str:
    return str(write_fake_npm(store))


@pytest.fixture
def lab(tmp_path: Path, npm: str) -> LabData:
    return prepare_lab(tmp_path / "lab", npm=npm, progress=False)


def _by_id(root: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_lab_manifest(root)}


def test_manifest_lines(lab: LabData):
    rows = read_lab_manifest(lab.root)
    keys = {"path", "label", "id", "captions", "vendor", "base", "category", "subcategory", "split"}
    assert all(set(r) == keys for r in rows)
    assert all(r["id"] == f"{r['vendor']}/{r['label']}" for r in rows)
    assert all((lab.root / r["path"]).is_file() for r in rows)
    # 30 animals + grinning + heart + hand + light-skin hand on 3 vendors, apple on 2 (twitter unreadable)
    assert len(rows) == 34 * 3 + 2 == sum(lab.counts.values())
    assert lab.vendors == {"facebook": 35, "google": 35, "twitter": 34}
    assert sum(lab.classes.values()) == 35
    assert (lab.root / "lab.json").is_file()


def test_composited_onto_white(lab: LabData):
    for vendor, color in COLORS.items():
        with Image.open(lab.root / "images" / vendor / "1F600.png") as image:
            assert image.mode == "RGB"
            assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
            assert image.getpixel((1, 1)) == color[:3]


def test_captions_label_names_tags_with_fe0f_normalised(lab: LabData):
    rows = _by_id(lab.root)
    assert rows["google/2764-FE0F"]["captions"] == ["red heart", "heavy black heart", "heart", "love"]
    assert rows["google/1F600"]["captions"] == ["grinning face", "grinning", "face", "grin"]
    assert rows["google/1F44B-1F3FB"]["captions"] == [
        "waving hand: light skin tone",
        "waving hand sign",
        "wave",
        "hello",
    ]
    # no CLDR entry: names only
    assert rows["google/1F400"]["captions"] == ["animal 0"]
    assert normalize_code("2764-fe0f-200D-1F525") == "2764-200D-1F525"


def test_skin_variants_are_classes_in_their_base_split(lab: LabData):
    rows = _by_id(lab.root)
    base, light = rows["google/1F44B"], rows["google/1F44B-1F3FB"]
    assert base["label"] != light["label"]
    assert light["base"] == "1F44B" and light["split"] == base["split"]
    assert (light["category"], light["subcategory"]) == ("People & Body", "hand-fingers-open")


def test_single_vendor_classes_dropped_and_unreadable_skipped(lab: LabData):
    labels = {r["label"] for r in read_lab_manifest(lab.root)}
    assert "1F34C" not in labels  # banana: google only
    assert "1F44B-1F3FC" not in labels  # medium-light hand: google only
    assert len(lab.skipped) == 1 and lab.skipped[0].startswith("twitter/1F34E")
    assert {r["vendor"] for r in read_lab_manifest(lab.root) if r["label"] == "1F34E"} == {
        "facebook",
        "google",
    }


def test_splits_disjoint_by_base_and_cover_all(lab: LabData):
    rows = read_lab_manifest(lab.root)
    split_of_base: dict[str, set[str]] = {}
    for r in rows:
        split_of_base.setdefault(r["base"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_base.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert lab.counts["train"] > lab.counts["test"] > lab.counts["val"] > 0
    for split in ("train", "val", "test"):
        assert {r["id"] for r in read_lab_manifest(lab.root, split)} == {
            r["id"] for r in rows if r["split"] == split
        }


def test_splits_independent_of_file_order(tmp_path: Path, lab: LabData):
    store = write_store(tmp_path / "reversed", reverse=True)
    other = prepare_lab(tmp_path / "lab2", npm=str(write_fake_npm(store)), progress=False)
    first = {r["id"]: r["split"] for r in read_lab_manifest(lab.root)}
    assert {r["id"]: r["split"] for r in read_lab_manifest(other.root)} == first
    assert other.counts == lab.counts


def test_assign_splits_stratified_and_seeded():
    subs = {f"B{i:03d}": f"sub{i % 4}" for i in range(400)}
    splits = assign_splits(subs, seed=0)
    assert splits == assign_splits(dict(reversed(list(subs.items()))), seed=0)
    assert splits != assign_splits(subs, seed=1)
    for sub in {s for s in subs.values()}:
        members = [b for b, s in subs.items() if s == sub]
        shares = [sum(splits[b] == name for b in members) / len(members) for name in ("train", "val", "test")]
        assert shares == pytest.approx([0.6, 0.1, 0.3], abs=0.02)


def test_second_call_does_no_work(tmp_path: Path, lab: LabData, store: Path, npm: str):
    calls = npm_calls(store)
    image = lab.root / "images" / "google" / "1F600.png"
    stamp = image.stat().st_mtime_ns
    manifest = (lab.root / "manifest.jsonl").read_bytes()
    again = prepare_lab(lab.root, npm=npm, progress=False)
    assert npm_calls(store) == calls == 4
    assert image.stat().st_mtime_ns == stamp
    assert (lab.root / "manifest.jsonl").read_bytes() == manifest
    assert again == lab


def test_force_starts_over(lab: LabData, store: Path, npm: str):
    again = prepare_lab(lab.root, npm=npm, progress=False, force=True)
    assert npm_calls(store) == 8
    assert again == lab


def test_archive_changed_between_runs_is_detected(lab: LabData, npm: str):
    archive = lab.root / "npm" / "emoji-datasource-google-16.0.0.tgz"
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(MCIPError, match=r"corrupted.*force"):
        prepare_lab(lab.root, npm=npm, progress=False)


def test_redownload_with_other_hash_is_detected(tmp_path: Path, store: Path, npm: str):
    root = tmp_path / "lab"
    (root / "npm").mkdir(parents=True)
    prepare_lab(root, npm=npm, progress=False)
    (root / "lab.json").write_text(
        (root / "lab.json").read_text().replace('"complete": true', '"complete": false')
    )
    (root / "npm" / "emojibase-data-17.0.0.tgz").unlink()
    with tarfile.open(store / "emojibase-data-17.0.0.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("package/en/data.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    with pytest.raises(MCIPError, match=r"sha256.*corrupted"):
        prepare_lab(root, npm=npm, progress=False)


def test_truncated_download_is_not_a_valid_archive(tmp_path: Path, store: Path, npm: str):
    archive = store / "emoji-datasource-twitter-16.0.0.tgz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(MCIPError, match="not a valid gzip tar"):
        prepare_lab(tmp_path / "lab", npm=npm, progress=False)


def test_path_traversal_refused(tmp_path: Path, store: Path, npm: str):
    with tarfile.open(store / "emojibase-data-17.0.0.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("package/../../evil.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(MCIPError, match="unsafe path"):
        prepare_lab(tmp_path / "lab", npm=npm, progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_npm_missing(tmp_path: Path):
    with pytest.raises(MCIPError, match=r"install Node.js/npm \(e.g. apt install npm\)"):
        prepare_lab(tmp_path / "lab", npm="no-such-npm-for-mcip", progress=False)


def test_npm_on_path_is_used(tmp_path: Path, store: Path, npm: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", f"{store}{os.pathsep}{os.environ['PATH']}")
    assert sum(prepare_lab(tmp_path / "lab", progress=False).counts.values()) == 104


def test_npm_failure_shows_its_stderr(tmp_path: Path, npm: str):
    with pytest.raises(MCIPError, match="404 Not Found"):
        prepare_lab(tmp_path / "lab", versions={"emojibase-data": "99.0.0"}, npm=npm, progress=False)


def test_other_versions_in_same_root_refused(lab: LabData, npm: str):
    with pytest.raises(MCIPError, match="force"):
        prepare_lab(lab.root, versions={"emojibase-data": "16.0.0"}, npm=npm, progress=False)
    with pytest.raises(MCIPError, match="Unknown lab package"):
        prepare_lab(lab.root, versions={"left-pad": "1.0.0"}, npm=npm, progress=False)


def test_lab_records(lab: LabData):
    records = lab_records(lab.root, "test")
    assert records and all(isinstance(r, ImageRecord) and r.path.is_file() for r in records)
    assert len(records) == lab.counts["test"]
    assert {r.id for r in records} == {r["id"] for r in read_lab_manifest(lab.root, "test")}
    assert all(r.captions for r in records)


def test_summary_printed(tmp_path: Path, npm: str, capsys: pytest.CaptureFixture):
    data = prepare_lab(tmp_path / "lab", npm=npm, progress=True)
    out = capsys.readouterr().out
    assert "104 images of 35 classes" in out and "skipped 1" in out and str(data.manifest) in out


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MCIP_LAB_NETWORK") != "1", reason="needs the npm registry: MCIP_LAB_NETWORK=1"
)
def test_real_npm_packages(tmp_path: Path):
    data = prepare_lab(tmp_path / "lab", progress=False)
    assert all(3500 <= n <= 4000 for n in data.vendors.values()), data.vendors
    assert set(data.vendors) == {"facebook", "google", "twitter"}
    rows = read_lab_manifest(data.root, "test")
    assert rows and all(r["captions"] and r["subcategory"] for r in rows)


def test_cli_lab_prepare(tmp_path: Path, npm: str, capsys):
    from mcip.cli import main

    assert main(["lab", "prepare", "--root", str(tmp_path / "cli-lab"), "--npm", npm, "--quiet"]) == 0
    assert (tmp_path / "cli-lab" / "manifest.jsonl").is_file()
    assert "train" in capsys.readouterr().out
    assert main(["lab", "prepare", "--root", str(tmp_path / "x"), "--npm", str(tmp_path / "no-npm")]) == 2
    assert "npm" in capsys.readouterr().err


def test_compositing_goes_through_the_image_limits(tmp_path):
    """The lab decodes through mcip.data.images.open_image as every other path: a thin image that would
    cost gigabytes to resize, and a file in a refused format, are skipped with the reason."""
    from PIL import Image

    from mcip.lab.images import composite_on_white

    thin = tmp_path / "thin.png"
    Image.new("RGBA", (1, 20_000)).save(thin)
    reason = composite_on_white(thin, tmp_path / "out.png")
    assert reason is not None and "aspect" in reason.lower() and not (tmp_path / "out.png").exists()
    eps = tmp_path / "x.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    assert composite_on_white(eps, tmp_path / "out2.png") is not None
    good = tmp_path / "good.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(good)
    assert composite_on_white(good, tmp_path / "out3.png") is None
    assert Image.open(tmp_path / "out3.png").mode == "RGB"
