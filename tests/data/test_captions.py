"""Caption sidecars: parsing with malformed lines, merging, attaching to records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcip.data import ImageRecord, attach_captions, read_caption_sidecar, write_caption_sidecar
from mcip.errors import ConfigError, InputError


def _records(*ids: str, captions=()) -> list[ImageRecord]:
    return [ImageRecord(i, Path(f"{i}.png"), "x", captions) for i in ids]


def test_round_trip_and_repeated_ids_merge_in_order(tmp_path):
    side = tmp_path / "caps.jsonl"
    write_caption_sidecar(side, {"a": ["one", "two"], "b": [{"text": "bee", "source": "blip", "score": 0.5}]})
    write_caption_sidecar(side, {"a": ["three"]}, source="vlm")
    assert read_caption_sidecar(side) == {"a": ["one", "two", "three"], "b": ["bee"]}
    first = json.loads(side.read_text().splitlines()[0])
    assert first["captions"][0] == {"text": "one", "source": "manual", "score": None}


def test_malformed_lines_are_skipped_and_counted(tmp_path):
    side = tmp_path / "caps.jsonl"
    lines = [
        json.dumps({"id": "a", "captions": [{"text": "ok"}]}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"captions": [{"text": "no id"}]}),
        json.dumps({"id": "b", "captions": "not a list"}),
        json.dumps({"id": "c", "captions": [{"source": "no text"}]}),
        "",
        json.dumps({"id": 7, "captions": ["plain string"]}),
    ]
    side.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 5 malformed line\(s\) \(first: line 2\)"):
        got = read_caption_sidecar(side)
    assert got == {"a": ["ok"], "7": ["plain string"]}


def test_appending_after_a_torn_last_line_starts_a_new_line(tmp_path):
    side = tmp_path / "caps.jsonl"
    side.write_text(json.dumps({"id": "a", "captions": ["x"]}) + '\n{"id": "b", "capt')
    write_caption_sidecar(side, {"c": ["z"]})
    with pytest.warns(UserWarning, match="skipped 1"):
        assert read_caption_sidecar(side) == {"a": ["x"], "c": ["z"]}


def test_missing_sidecar(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_caption_sidecar(tmp_path / "none.jsonl")


def test_attach_dedupes_keeps_order_caps_and_reports_images_without_captions():
    recs = _records("a", "b", captions=("own",))
    recs.append(ImageRecord("c", Path("c.png"), "y"))
    by_id = {"a": ["x", " own ", "y", "x", "", "z"], "b": []}
    with pytest.warns(UserWarning, match="1 of 3 images have no caption"):
        out = attach_captions(recs, by_id, max_per_image=3)
    assert [r.captions for r in out] == [("own", "x", "y"), ("own",), ()]
    assert recs[0].captions == ("own",)  # records are immutable; new ones are returned


def test_attach_fails_when_no_id_matches():
    with pytest.raises(InputError, match="None of the 1 caption ids"):
        attach_captions(_records("cat/1.png"), {"/abs/cat/1.png": ["x"]})


def test_attach_validates_max_per_image():
    with pytest.raises(ConfigError, match="max_per_image"):
        attach_captions(_records("a"), {"a": ["x"]}, max_per_image=0)
