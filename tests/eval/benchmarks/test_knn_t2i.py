"""FGVC-Aircraft k-NN and the Karpathy-split text-to-image adapters."""

from __future__ import annotations

import pytest

from mcip.eval.benchmarks import DatasetMissingError, create_benchmark
from tests.eval.benchmarks.synth import coco, fgvc_aircraft, flickr30k, labels


def test_fgvc_aircraft_train_index_test_queries_shared_variant_labels(tmp_path):
    fgvc_aircraft(tmp_path)
    data = create_benchmark("fgvc_aircraft").load(tmp_path)
    assert [p.name for p in data.index.paths] == ["0000001.jpg", "0000002.jpg"]
    assert labels(data.index) == [0, 2]
    assert [p.name for p in data.queries.paths] == ["0000004.jpg", "0000005.jpg"]
    assert labels(data.queries) == [1, 2]  # "A300B4", "Cessna 172" (a variant with a space)
    assert data.num_classes == 3


def test_fgvc_aircraft_trainval_index(tmp_path):
    fgvc_aircraft(tmp_path)
    data = create_benchmark("fgvc_aircraft", index_split="trainval").load(tmp_path)
    assert labels(data.index) == [0, 2, 1]


def test_flickr30k_test_split_first_five_captions(tmp_path):
    flickr30k(tmp_path)
    data = create_benchmark("flickr30k").load(tmp_path)
    assert [p.name for p in data.images.paths] == ["1.jpg", "2.jpg"]  # 3.jpg is train
    assert len(data.captions) == 10 and data.captions[0] == "1.jpg caption 0"
    assert data.captions[5:] == tuple(f"2.jpg caption {k}" for k in range(5))
    assert data.caption_image.tolist() == [0] * 5 + [1] * 5


def test_coco_paths_from_filepath_and_caption_count_option(tmp_path):
    coco(tmp_path)
    data = create_benchmark("coco").load(tmp_path)
    assert data.images.paths == (
        tmp_path / "coco/val2014/COCO_val2014_1.jpg",
        tmp_path / "coco/val2014/COCO_val2014_2.jpg",
    )
    assert len(data.captions) == 10
    more = create_benchmark("coco", captions_per_image=7).load(tmp_path)
    assert more.caption_image.tolist() == [0] * 7 + [1] * 5
    assert more.caption_image.dtype.name == "int64"


def test_karpathy_missing_image_is_named(tmp_path):
    coco(tmp_path)
    (tmp_path / "coco" / "val2014" / "COCO_val2014_2.jpg").unlink()
    with pytest.raises(DatasetMissingError, match=r"COCO_val2014_2\.jpg: not found"):
        create_benchmark("coco").load(tmp_path)


def test_karpathy_missing_json_names_it_and_the_splits_zip(tmp_path):
    with pytest.raises(DatasetMissingError) as info:
        create_benchmark("flickr30k").check(tmp_path)
    assert str(tmp_path / "flickr30k" / "dataset_flickr30k.json") in str(info.value)
    assert "caption_datasets.zip" in str(info.value)
