"""Caption diversity: the statistics against hand-computed values, and the degenerate-sidecar warning of
`mcip captions summary`."""

from __future__ import annotations

import json

import pytest

from mcip.captions.diversity import _ClassNames, caption_diversity, format_diversity
from mcip.captions.summary import format_summary, summarize
from mcip.cli import main
from mcip.data import ImageRecord, write_caption_sidecar


def _records(labels: dict[str, str]) -> list[ImageRecord]:
    return [ImageRecord(i, f"{i}.jpg", label) for i, label in labels.items()]


def test_statistics_against_hand_computed_values():
    entries = {
        "a": [{"text": "a photo", "score": 0.3}, {"text": "a cat"}],
        "b": ["a photo", " kitty ", "a photo"],  # a repeated caption counts once per image
        "c": ["a photo", "a dog"],
        "d": [{"text": "a cat on a sofa"}],  # a dog whose top caption names the cat class
        "e": ["a photo"],  # no record: counts in the coverage only
        "f": [],  # no caption: not counted
    }
    records = _records({"a": "cat", "b": "cat", "c": "dog", "d": "dog", "f": "dog"})
    d = caption_diversity(entries, records)
    assert d.images == 5 and d.distinct_captions == 5
    assert d.most_frequent == (
        ("a photo", 4),
        ("a cat", 1),
        ("kitty", 1),
        ("a dog", 1),
        ("a cat on a sofa", 1),
    )
    assert d.top1_coverage == pytest.approx(4 / 5) and d.top5_coverage == 1.0
    assert d.classes == 2 and d.distinct_per_class == pytest.approx(3.0)  # cat: photo, cat, kitty; dog: 3
    assert d.other_class_share == pytest.approx(1 / 4) and d.other_class_examples == (
        ("d", "a cat on a sofa"),
    )
    # 'a photo' spans both classes (flagged); the top 5 span only 2 classes (not flagged)
    assert len(d.problems) == 2 and d.degenerate
    assert "'a photo', is among the captions of 80% of the images (4 of 5, 2 classes" in d.problems[0]
    assert "top caption of 25% of the labelled images names another class" in d.problems[1]
    assert "d: 'a cat on a sofa'" in d.problems[1]
    assert "mcip captions template" in d.warning() and "mcip captions merge" in d.warning()
    without_labels = caption_diversity(entries)
    assert without_labels.classes == 0 and without_labels.distinct_per_class is None
    assert without_labels.top1_coverage == d.top1_coverage
    assert "top 5 on 100%" in format_diversity(without_labels)
    assert caption_diversity({}).images == 0 and not caption_diversity({}).degenerate


def test_class_names_match_whole_words_case_insensitively():
    finder = _ClassNames(["cat", "red_fox", "ox", "Air Max 90"], {"cat": "house cat"})
    assert finder.named("a catalog page") == set()  # not a word of its own
    assert finder.named("A Red-Fox at night") == {"red_fox"}
    assert finder.named("an ox") == set()  # labels under 3 characters are not matched
    assert finder.named("my house cat") == {"cat"} and finder.named("the Cat") == {"cat"}
    assert finder.named("nike air max 90 shoes") == {"Air Max 90"}


def test_a_caption_confined_to_its_class_may_cover_it():
    # 3 classes, one class-specific caption each (covering a third of the images) + an image caption
    entries = {
        f"{c}{i}": [f"a photo of a {c}", f"picture {c}{i}"]
        for c in ("apple", "pear", "plum")
        for i in range(4)
    }
    records = _records({i: i.rstrip("0123456789") for i in entries})
    d = caption_diversity(entries, records)
    assert d.top1_coverage == pytest.approx(1 / 3) and d.top5_coverage == 1.0
    assert d.distinct_per_class == 5.0 and d.other_class_share == 0.0
    assert not d.problems
    assert caption_diversity(entries).degenerate  # without labels nothing says they are class-specific


def _sidecars(tmp_path):
    labels = {f"img{n}": f"fruit{n % 10}" for n in range(30)}
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,id\n" + "".join(f"{i}.jpg,{lab},{i}\n" for i, lab in labels.items()))
    degenerate = {i: ["stock photo", "a product", f"{labels[i]} special"] for i in labels}
    degenerate.update({i: ["fruit3 on a table", "stock photo"] for i in list(labels)[:8]})
    healthy = {i: [f"a photo of a {lab}", f"a {lab} outdoors", f"image {i}"] for i, lab in labels.items()}
    write_caption_sidecar(tmp_path / "degenerate.jsonl", degenerate)
    write_caption_sidecar(tmp_path / "healthy.jsonl", healthy)
    return manifest


def test_summary_warns_about_a_degenerate_sidecar_with_the_numbers(tmp_path, capsys):
    manifest = _sidecars(tmp_path)
    sidecar = str(tmp_path / "degenerate.jsonl")
    assert main(["captions", "summary", sidecar, "--images", str(manifest)]) == 0
    out, err = capsys.readouterr()
    assert "diversity: 13 distinct captions on 30 images; the most frequent caption is on 100%" in out
    assert (
        "warning:" in err
        and "'stock photo', is among the captions of 100% of the images (30 of 30, 10" in err
    )
    assert "the 5 most frequent captions cover 100%" in err
    # 8 images (fruit0..7) have "fruit3 on a table" as top caption; img3 is fruit3 itself
    assert "top caption of 23% of the labelled images names another class" in err
    assert "mcip captions template" in err
    assert main(["captions", "summary", sidecar, "--json"]) == 0  # without labels: coverage only
    out, err = capsys.readouterr()
    diversity = json.loads(out)["diversity"]
    assert diversity["degenerate"] and diversity["classes"] == 0 and diversity["top1_coverage"] == 1.0
    assert "warning:" in err


def test_summary_of_a_healthy_sidecar_does_not_warn(tmp_path, capsys):
    manifest = _sidecars(tmp_path)
    assert main(["captions", "summary", str(tmp_path / "healthy.jsonl"), "--images", str(manifest)]) == 0
    out, err = capsys.readouterr()
    assert "the most frequent caption is on 10% of the images, the top 5 on 30%" in out
    assert "5.0 distinct captions per class (10 classes)" in out and "another class on 0%" in out
    assert "warning" not in err


def test_summary_names_need_images(tmp_path, capsys):
    _sidecars(tmp_path)
    names = tmp_path / "names.tsv"
    names.write_text("fruit1\tapple\n")
    assert main(["captions", "summary", str(tmp_path / "healthy.jsonl"), "--names", str(names)]) == 2
    assert "--names needs --images" in capsys.readouterr().err


def test_summary_dict_keeps_the_diversity_and_formats_it():
    entries = {"a": [{"text": "x"}], "b": [{"text": "x"}]}
    summary = summarize(entries)
    assert summary["diversity"]["top1_coverage"] == 1.0 and summary["diversity"]["degenerate"]
    assert "diversity: 1 distinct captions on 2 images" in format_summary(summary)
