"""ImageNet k-NN and zero-shot adapters, and ObjectNet."""

from __future__ import annotations

import pytest
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

from mcip.errors import ConfigError, InputError
from mcip.eval.benchmarks import DatasetMissingError, create_benchmark
from mcip.eval.benchmarks.imagenet import imagenet_wnids
from mcip.eval.benchmarks.zeroshot_imagenet import openai_templates
from tests.eval.benchmarks.synth import (
    GOLDFISH,
    STINGRAY,
    TENCH,
    WNID_INDEX,
    imagenet,
    labels,
    objectnet,
    touch,
)


def test_wnid_order_is_the_sorted_imagenet_1k_list():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids)
    assert {w: wnids.index(w) for w in WNID_INDEX} == WNID_INDEX


def test_knn_val_labels_index_the_1000_classes(tmp_path):
    imagenet(tmp_path)
    data = create_benchmark("knn_in_val").load(tmp_path)
    assert data.num_classes == 1000
    assert labels(data.index) == [0] * 3 + [1] * 3 + [6] * 3
    assert [p.name for p in data.index.paths[:3]] == ["a.JPEG", "b.JPEG", "c.JPEG"]
    assert labels(data.queries) == labels(data.index)
    assert data.queries.paths[0].parent == tmp_path / "imagenet" / "val" / TENCH


def test_knn_imagenet_a_maps_its_wnids_into_the_1000_class_space(tmp_path):
    imagenet(tmp_path)
    data = create_benchmark("knn_in_a").load(tmp_path)
    assert labels(data.queries) == [1, 6, 6]  # goldfish, stingray, stingray
    assert data.num_classes == 1000


def test_knn_imagenet_v2_folders_are_class_indices(tmp_path):
    imagenet(tmp_path)
    assert labels(create_benchmark("knn_in_v2").load(tmp_path).queries) == [0, 6, 6]


def test_index_per_class_is_a_deterministic_sample(tmp_path):
    imagenet(tmp_path)
    one = create_benchmark("knn_in_sketch", index_per_class="2").load(tmp_path).index
    assert labels(one) == [0, 0, 1, 1, 6, 6]
    assert one.paths == create_benchmark("knn_in_sketch", index_per_class=2).load(tmp_path).index.paths
    assert all(p in create_benchmark("knn_in_sketch").load(tmp_path).index.paths for p in one.paths)
    with pytest.raises(ConfigError, match="index_per_class"):
        create_benchmark("knn_in_val", index_per_class="0")


def test_flat_val_folder_says_to_sort_it_into_wnid_folders(tmp_path):
    imagenet(tmp_path)
    for wnid in WNID_INDEX:
        for p in (tmp_path / "imagenet" / "val" / wnid).iterdir():
            p.unlink()
        (tmp_path / "imagenet" / "val" / wnid).rmdir()
    touch(tmp_path / "imagenet" / "val", "ILSVRC2012_val_00000001.JPEG")
    for name in ("knn_in_val", "zs_in_val"):
        with pytest.raises(DatasetMissingError, match=r"valprep\.sh"):
            create_benchmark(name).check(tmp_path)


def test_unknown_wnid_folder_fails(tmp_path):
    imagenet(tmp_path)
    touch(tmp_path / "imagenet-a", "n99999999/1.jpg")
    with pytest.raises(InputError, match="n99999999"):
        create_benchmark("knn_in_a").load(tmp_path)


def test_knn_missing_train_names_the_train_folder(tmp_path):
    touch(tmp_path / "imagenet-a", f"{STINGRAY}/1.jpg")
    with pytest.raises(DatasetMissingError) as info:
        create_benchmark("knn_in_a").check(tmp_path)
    assert str(tmp_path / "imagenet" / "train") in str(info.value)


def test_openai_templates_are_the_80_with_one_placeholder():
    templates = openai_templates()
    assert len(templates) == 80 and all(t.count("{}") == 1 for t in templates)
    assert [t.format("dog") for t in templates] == [t("dog") for t in OPENAI_IMAGENET_TEMPLATES]


def test_zeroshot_imagenet_a_over_1000_classes_on_request(tmp_path):
    imagenet(tmp_path)
    data = create_benchmark("zs_in_a", classes="imagenet").load(tmp_path)
    assert data.classnames == tuple(IMAGENET_CLASSNAMES) and len(data.templates) == 80
    assert labels(data.images) == [1, 6, 6] and data.label_sets is None


def test_zeroshot_imagenet_a_restricts_to_the_classes_present_by_default(tmp_path):
    imagenet(tmp_path)
    data = create_benchmark("zs_in_a").load(tmp_path)
    assert data.classnames == (IMAGENET_CLASSNAMES[1], IMAGENET_CLASSNAMES[6])
    assert labels(data.images) == [0, 1, 1]
    with pytest.raises(ConfigError, match="has no option classes"):
        create_benchmark("zs_in_val", classes="subset")


def test_zeroshot_val_and_sketch(tmp_path):
    imagenet(tmp_path)
    for name in ("zs_in_val", "zs_in_sketch"):
        data = create_benchmark(name).load(tmp_path)
        assert labels(data.images) == [0] * 3 + [1] * 3 + [6] * 3 and len(data.classnames) == 1000


def test_objectnet_keeps_mapped_classes_with_imagenet_label_sets(tmp_path):
    objectnet(tmp_path)
    data = create_benchmark("zs_objectnet", classes="imagenet").load(tmp_path)
    rel = [p.relative_to(tmp_path / "objectnet" / "images").as_posix() for p in data.images.paths]
    assert rel == ["fish/1.png", "fish/2.png", "ray/1.png"]  # chair maps to no ImageNet class
    assert data.label_sets == ((0, 1), (0, 1), (6,))  # tench + goldfish; stingray
    assert labels(data.images) == [0, 0, 6]
    assert len(data.classnames) == 1000 and len(data.templates) == 80


def test_objectnet_subset_is_the_clip_benchmark_protocol(tmp_path):
    objectnet(tmp_path)
    data = create_benchmark("zs_objectnet", classes="subset").load(tmp_path)
    assert data.classnames == ("fish", "ray") and data.label_sets is None
    assert labels(data.images) == [0, 0, 1]


def test_objectnet_missing_mapping_is_named(tmp_path):
    objectnet(tmp_path)
    (tmp_path / "objectnet" / "mappings" / "pytorch_to_imagenet_2012_id.json").unlink()
    with pytest.raises(DatasetMissingError, match=r"pytorch_to_imagenet_2012_id\.json: file not found"):
        create_benchmark("zs_objectnet").check(tmp_path)


def test_goldfish_constant_matches_open_clip():
    assert IMAGENET_CLASSNAMES[WNID_INDEX[GOLDFISH]] == "goldfish"
