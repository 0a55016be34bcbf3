"""Manifests (CSV / JSONL / Parquet), image folders and the load_records dispatch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mcip.data import ImageRecord, class_index, load_records, read_image_folder, read_manifest, write_shards
from mcip.errors import InputError
from tests.data.conftest import write_png


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_csv_resolves_relative_paths_against_the_manifest_folder(tmp_path):
    m = _write_csv(tmp_path / "m.csv", ["path", "label"], [["img/a.png", "cat"], ["img/b.png", "dog"]])
    recs = read_manifest(m)
    assert recs == [
        ImageRecord("img/a.png", tmp_path / "img/a.png", "cat"),
        ImageRecord("img/b.png", tmp_path / "img/b.png", "dog"),
    ]


def test_root_overrides_the_manifest_folder_and_absolute_paths_stay(tmp_path):
    absolute = tmp_path / "elsewhere" / "c.png"
    m = _write_csv(tmp_path / "m.csv", ["path", "label"], [["a.png", "x"], [str(absolute), "y"]])
    recs = read_manifest(m, root=tmp_path / "data")
    assert recs[0].path == tmp_path / "data" / "a.png" and recs[0].id == "a.png"
    assert recs[1].path == absolute and recs[1].id == absolute.as_posix()


@pytest.mark.parametrize("path_col", ["path", "image", "filepath"])
@pytest.mark.parametrize("label_col", ["label", "class"])
def test_column_aliases(tmp_path, path_col, label_col):
    m = _write_csv(tmp_path / "m.csv", [path_col, label_col], [["a.png", "cat"]])
    assert read_manifest(m) == [ImageRecord("a.png", tmp_path / "a.png", "cat")]


def test_csv_captions_as_json_list_or_pipe_separated(tmp_path):
    rows = [
        ["a.png", "x", "i1", '["one", "two, with comma"]'],
        ["b.png", "x", "i2", "three| four |"],
        ["c.png", "x", "i3", ""],
    ]
    recs = read_manifest(_write_csv(tmp_path / "m.csv", ["path", "label", "id", "captions"], rows))
    assert [r.id for r in recs] == ["i1", "i2", "i3"]
    assert [r.captions for r in recs] == [("one", "two, with comma"), ("three", "four"), ()]


def test_jsonl_with_list_captions_and_numeric_labels(tmp_path):
    m = _write_jsonl(
        tmp_path / "m.jsonl",
        [{"image": "a.png", "class": 3, "captions": ["x", "y"]}, {"image": "b.png", "class": 4}],
    )
    recs = read_manifest(m)
    assert [(r.label, r.captions) for r in recs] == [("3", ("x", "y")), ("4", ())]


def test_jsonl_bad_line_names_the_line(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"path": "a.png", "label": "x"}\n{oops\n')
    with pytest.raises(InputError, match="line 2"):
        read_manifest(m)


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"filepath": ["a.png", "b.png"], "label": ["p", "q"], "captions": [["c1"], []]})
    pq.write_table(table, tmp_path / "m.parquet")
    recs = read_manifest(tmp_path / "m.parquet")
    assert [(r.id, r.label, r.captions) for r in recs] == [("a.png", "p", ("c1",)), ("b.png", "q", ())]


def test_missing_column_error_names_the_columns_found(tmp_path):
    m = _write_csv(tmp_path / "m.csv", ["file", "label"], [["a.png", "x"]])
    with pytest.raises(InputError, match=r"no 'path' column.*columns found: file, label"):
        read_manifest(m)
    m = _write_csv(tmp_path / "n.csv", ["path", "category"], [["a.png", "x"]])
    with pytest.raises(InputError, match=r"no 'label' column.*category"):
        read_manifest(m)


def test_empty_label_is_an_error(tmp_path):
    m = _write_csv(tmp_path / "m.csv", ["path", "label"], [["a.png", "x"], ["b.png", ""]])
    with pytest.raises(InputError, match=r"row 2.*class label"):
        read_manifest(m)


def test_duplicate_ids_are_an_error(tmp_path):
    m = _write_csv(tmp_path / "m.csv", ["path", "label"], [["a.png", "x"], ["a.png", "y"]])
    with pytest.raises(InputError, match=r"duplicate.*'a\.png'"):
        read_manifest(m)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"\.csv, \.jsonl, \.parquet"):
        read_manifest(tmp_path / "m.tsv")
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "m.csv")


def test_image_folder_uses_the_first_subfolder_as_class(tmp_path):
    write_png(tmp_path / "cat" / "deep" / "a.png")
    write_png(tmp_path / "dog" / "b.png")
    recs = read_image_folder(tmp_path)
    assert [(r.id, r.label) for r in recs] == [("cat/deep/a.png", "cat"), ("dog/b.png", "dog")]
    assert class_index(reversed(recs)) == {"cat": 0, "dog": 1}


def test_image_folder_rejects_images_without_a_class_folder(tmp_path):
    write_png(tmp_path / "cat" / "a.png")
    write_png(tmp_path / "loose.png")
    with pytest.raises(InputError, match=r"loose\.png.*sub-folder"):
        read_image_folder(tmp_path)


def test_load_records_dispatches_on_source(tmp_path, image_folder):
    folder_recs = load_records(image_folder)
    assert len(folder_recs) == 12
    m = _write_csv(tmp_path / "m.csv", ["path", "label"], [["folder/ant/0.png", "ant"]])
    assert load_records(m)[0].path == image_folder / "ant" / "0.png"
    write_shards(folder_recs, tmp_path / "shards", per_shard=5)
    shard_recs = load_records(str(tmp_path / "shards" / "shard-{000000..000002}.tar"))
    assert sorted(r.id for r in shard_recs) == sorted(r.id for r in folder_recs)
    with pytest.raises(InputError, match="image folder"):
        load_records(tmp_path / "nothing-here")
