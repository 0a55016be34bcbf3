"""evaluate_models + write_report end to end: tiny model, synthetic images, one benchmark per family."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mcip
from mcip.eval.benchmarks.base import (
    Benchmark,
    CaptionSet,
    DatasetMissingError,
    Images,
    KNNSet,
    RetrievalSet,
    ZeroShotSet,
)
from mcip.eval.report import markdown_table, write_report
from mcip.eval.runner import evaluate_models

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def _images(root: Path, per_class: int = 4) -> Images:
    paths, labels = [], []
    for c, (name, rgb) in enumerate(COLOURS.items()):
        for i in range(per_class):
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24 + i, 24), rgb).save(path)
            paths.append(path)
            labels.append(c)
    return Images(tuple(paths), np.array(labels, dtype=np.int64))


@dataclass
class _Fake(Benchmark):
    """A benchmark whose data is built by the test under root/<name>."""

    def check(self, root: Path) -> None:
        if not (root / self.name).is_dir():
            raise DatasetMissingError(f"put the {self.name} images under {root / self.name}")


class FakeI2I(_Fake):
    name, family, table1_metric = "fake_i2i", "i2i", "map"

    def load(self, root):
        return RetrievalSet(_images(root / self.name), include_self=True, metric="map")


class FakeKNN(_Fake):
    name, family, table1_metric = "fake_knn", "knn", "top1"

    def load(self, root):
        return KNNSet(_images(root / self.name / "index"), _images(root / self.name / "queries", 2), 3)


class FakeZS(_Fake):
    name, family, table1_metric = "fake_zs", "zeroshot", "top1"

    def load(self, root):
        return ZeroShotSet(_images(root / self.name), tuple(COLOURS), ("a {} square", "a photo of {}"))


class FakeT2I(_Fake):
    name, family, table1_metric = "fake_t2i", "t2i", "recall@5"

    def load(self, root):
        images = _images(root / self.name, 2)
        captions = tuple(f"a {n} square" for n in COLOURS for _ in range(2))
        return CaptionSet(images, captions, np.arange(len(captions), dtype=np.int64))


class Absent(_Fake):
    name, family, table1_metric = "absent_i2i", "i2i", "map"

    def load(self, root):  # pragma: no cover - never reached
        raise AssertionError


@pytest.fixture
def data_root(tmp_path):
    for b in (FakeI2I(), FakeKNN(), FakeZS(), FakeT2I()):
        (tmp_path / b.name).mkdir()
    return tmp_path


def test_models_on_every_family_with_cached_embeddings(model_specs, data_root, tmp_path, monkeypatch):
    spec = model_specs["openclip"]["spec"]
    base = mcip.save_model(mcip.load_model(spec), tmp_path / "base")
    benches = [FakeI2I(), FakeKNN(), FakeZS(), FakeT2I()]
    reports = evaluate_models([base, base], benches, data_root, cache_dir=tmp_path / "cache")
    first = reports[0].results
    assert set(first) == {"fake_i2i", "fake_knn", "fake_zs", "fake_t2i"}
    assert 0 <= first["fake_i2i"].metrics["map"] <= 100 and "top5" in first["fake_knn"].metrics
    assert {"recall@1", "recall@5", "recall@10"} <= set(first["fake_t2i"].metrics)
    assert first["fake_i2i"].images == 12 and first["fake_i2i"].unreadable == 0
    for name in first:  # the same model twice: identical numbers, the second from the cache
        assert reports[1].results[name].metrics == first[name].metrics

    import mcip.embed as embed

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(embed, "encode_images", boom)  # a third run must be served by the cache alone
    again = evaluate_models([base], benches, data_root, cache_dir=tmp_path / "cache")
    assert again[0].results["fake_knn"].metrics == first["fake_knn"].metrics


def test_missing_data_fails_before_any_model_is_loaded(data_root, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("mcip.eval.runner.load_model", no_model)
    with pytest.raises(DatasetMissingError, match="absent_i2i"):
        evaluate_models(["x"], [FakeI2I(), Absent()], data_root)


def test_report_marks_absent_columns_and_partial_averages(model_specs, data_root, tmp_path):
    benches = [FakeI2I(), Absent(), FakeKNN(), FakeZS(), FakeT2I()]
    reports = evaluate_models(
        [model_specs["openclip"]["spec"]], benches, data_root, skip_missing=True, cache_dir=tmp_path / "cache"
    )
    assert reports[0].missing == ["absent_i2i"]
    columns = [(b.name, b.family, b.table1_metric) for b in benches]
    paths = write_report(reports, columns, tmp_path / "out")
    md = paths["markdown"].read_text()
    assert "n/a" in md and "(1/2)" in md and "(4/5)" in md  # I2I avg over 1 of 2 columns; AVG 4 of 5
    rows = list(csv.reader(paths["csv"].open()))
    assert rows[0][:3] == ["model", "fake_i2i", "absent_i2i"] and rows[1][2] == ""
    data = json.loads(paths["json"].read_text())
    assert data["models"][0]["averages"]["AVG"]["present"] == 4
    assert paths["plot"].is_file() and paths["plot"].stat().st_size > 1000
    i2i = reports[0].results["fake_i2i"].metrics["map"]
    avg_i2i = data["models"][0]["averages"]["i2i"]["value"]
    assert avg_i2i == pytest.approx(i2i)  # the absent column is not averaged in as a zero


def test_markdown_layout_groups_families_in_table1_order():
    from mcip.eval.runner import BenchmarkResult, ModelReport

    r = ModelReport(
        "m",
        {
            "t": BenchmarkResult("t", "t2i", {"recall@5": 50.0}, "recall@5", 0, 0, 0),
            "i": BenchmarkResult("i", "i2i", {"map": 80.0}, "map", 0, 0, 0),
        },
    )
    md = markdown_table([r], [("t", "t2i"), ("i", "i2i")])
    header = md.splitlines()[0]
    assert header.index("| i |") < header.index("| t |") < header.index("I2I avg") < header.index("AVG")
    assert "| 65.0 |" in md.splitlines()[2] + "|"  # AVG of 80 and 50


def test_text_benchmarks_are_not_applicable_after_drop_projector(model_specs, data_root, tmp_path):
    spec = model_specs["openclip"]["spec"]
    dropped = mcip.save_model(mcip.load_model(spec, drop_projector=True), tmp_path / "dropped")
    benches = [FakeI2I(), FakeZS(), FakeT2I()]
    (report,) = evaluate_models([dropped], benches, data_root, cache_dir=tmp_path / "cache")
    assert set(report.results) == {"fake_i2i"} and report.missing == ["fake_zs", "fake_t2i"]
    assert "not applicable" in report.notes[0] and "fake_t2i" in report.notes[0]
    md = markdown_table([report], [(b.name, b.family) for b in benches])
    assert md.count("n/a") >= 2


def test_a_row_with_the_base_text_tower_reuses_its_prompt_embeddings(model_specs, data_root, tmp_path):
    """An image-only fine-tune (GPR-FT, MCIP) saved in another folder: its evaluation encodes no text
    (prompts and captions come from the base's cache); its zero-shot numbers equal a classifier built
    from ``encode_text`` of every prompt."""
    import torch

    from mcip.eval.protocols import classifier_from_prompts, evaluate_zeroshot, zeroshot_prompts
    from mcip.eval.text_encoding import encode_texts_by_length

    model = mcip.load_model(model_specs["openclip"]["spec"])
    base = mcip.save_model(model, tmp_path / "base")
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            if model.part_of(name) == "image_encoder":
                p.mul_(1.1)
    row = mcip.save_model(model, tmp_path / "runs" / "gpr" / "model")
    benches, cache = [FakeZS(), FakeT2I()], tmp_path / "cache"
    evaluate_models([base], benches, data_root, cache_dir=cache)

    encoded = []
    real = type(model).text_features_from_hidden

    def spy(self, hidden, tokens, n_last):
        encoded.append(int(hidden.shape[0]))
        return real(self, hidden, tokens, n_last)

    from unittest import mock

    with mock.patch.object(type(model), "text_features_from_hidden", spy):
        report = evaluate_models([row], benches, data_root, cache_dir=cache)[0]
        assert encoded == []  # no prompt, no caption encoded
        encode_texts_by_length(model, ["a short one", "a longer text than the short one"], batch_size=1)
    assert encoded == [1, 1]  # (the spy sees what the text tower encodes)

    data = FakeZS().load(data_root)
    prompts = zeroshot_prompts(data.classnames, data.templates)
    with torch.no_grad():
        classifier = classifier_from_prompts(model.encode_text(prompts).float(), len(data.classnames))
        pixels = torch.stack([model.eval_transform(Image.open(p).convert("RGB")) for p in data.images.paths])
        images = model.encode_image(pixels)
    expected = evaluate_zeroshot(images.float(), torch.as_tensor(data.images.labels), classifier)
    assert report.results["fake_zs"].metrics == pytest.approx(expected)


def test_a_saved_row_is_evaluated_without_hashing_its_weights(model_specs, data_root, tmp_path, monkeypatch):
    """Its folder records the fingerprints the evaluation keys its caches by: nothing is hashed, and the
    numbers equal those of the same weights loaded from a folder without the record."""
    import json

    from mcip.models import fingerprint as FP

    model = mcip.load_model(model_specs["openclip"]["spec"])
    row = mcip.save_model(model, tmp_path / "row")
    old = mcip.save_model(model, tmp_path / "old")
    meta = json.loads((old / "mcip_model.json").read_text())
    del meta["fingerprints"]
    (old / "mcip_model.json").write_text(json.dumps(meta))
    benches = [FakeI2I(), FakeKNN(), FakeZS(), FakeT2I()]
    expected = evaluate_models([old], benches, data_root, cache_dir=tmp_path / "cache-old")[0]

    def no_hashing(*a, **k):
        raise AssertionError("hashed the weights")

    monkeypatch.setattr(FP, "_model_fingerprint", no_hashing)
    monkeypatch.setattr(FP, "_hash_tensors", no_hashing)
    got = evaluate_models([row], benches, data_root, cache_dir=tmp_path / "cache")[0]
    for name, result in expected.results.items():
        assert got.results[name].metrics == result.metrics
