"""Labels of training and index manifests: scalars only, nulls refused with the row, mixed types warned."""

from __future__ import annotations

import json
import warnings

import pytest

from mcip.data.manifest import read_manifest
from mcip.data.records import label_text
from mcip.errors import InputError
from mcip.index.records import read_index_manifest


def _jsonl(tmp_path, labels) -> object:
    path = tmp_path / "m.jsonl"
    rows = [{"path": f"{i}.png", "label": label} for i, label in enumerate(labels)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["cat", None], r"m.jsonl, row 2: 'label' is null; every row needs a class label"),
        (["cat", ["a"]], r"row 2: 'label' must be a string or a number, got list \['a'\]"),
        ([{"name": "cat"}], r"row 1: 'label' must be a string or a number, got dict"),
        (["cat", "  "], r"row 2: empty 'label'; every row needs a class label"),
    ],
)
def test_training_labels_that_are_refused(tmp_path, labels, message):
    with pytest.raises(InputError, match=message):
        read_manifest(_jsonl(tmp_path, labels))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["cat", None], r"row 2: 'label' is null; write \"\" for an image without a label"),
        (["cat", ["a"]], r"row 2: 'label' must be a string or a number, got list"),
    ],
)
def test_index_labels_that_are_refused(tmp_path, labels, message):
    with pytest.raises(InputError, match=message):
        read_index_manifest(_jsonl(tmp_path, labels))


def test_index_labels_may_be_empty_or_absent(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "a.png", "label": ""}\n{"path": "b.png"}\n{"path": "c.png", "label": "x"}\n')
    assert [r.label for r in read_index_manifest(path)] == ["", "", "x"]


def test_nan_counts_as_null():
    with pytest.raises(InputError, match="'class' is null"):
        label_text(float("nan"), "m.parquet, row 3", "class")
    assert label_text(3, "w") == "3" and label_text(2.5, "w") == "2.5" and label_text(" a ", "w") == "a"


@pytest.mark.parametrize("reader", [read_manifest, read_index_manifest])
def test_numbers_and_strings_mixed_warn_once(tmp_path, reader):
    path = _jsonl(tmp_path, [1, "1", 2, "dog"])
    with pytest.warns(
        UserWarning, match=r"labels mix numbers \(1 at row 1\) and strings \('1' at row 2\)"
    ) as caught:
        records = reader(path)
    assert len([w for w in caught if "labels mix" in str(w.message)]) == 1
    assert [r.label for r in records] == ["1", "1", "2", "dog"]


@pytest.mark.parametrize("labels", [[1, 2, 3], ["a", "b"]])
def test_one_type_of_label_does_not_warn(tmp_path, labels):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_manifest(_jsonl(tmp_path, labels))


def test_csv_labels_are_always_text(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("path,label\na.png,1\nb.png,cat\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.label for r in read_manifest(path)] == ["1", "cat"]
