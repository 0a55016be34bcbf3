"""The generic adapters for a user's own data."""

from __future__ import annotations

import pytest

from mcip.errors import ConfigError, InputError
from mcip.eval.benchmarks import DatasetMissingError, create_benchmark
from mcip.eval.benchmarks.zeroshot_imagenet import openai_templates
from tests.eval.benchmarks.synth import (
    captions_t2i,
    classnames_zeroshot,
    folder_i2i,
    folder_knn,
    labels,
    touch,
    write,
)


def test_folder_i2i_classes_are_first_level_sub_folders(tmp_path):
    data = create_benchmark("folder_i2i", **folder_i2i(tmp_path)).load(tmp_path)
    rel = [p.relative_to(tmp_path / "mine").as_posix() for p in data.images.paths]
    assert rel == ["cat/1.jpg", "dog/1.jpg", "dog/sub/2.png"]
    assert labels(data.images) == [0, 1, 1]
    assert data.include_self and data.metric == "map"
    excluded = create_benchmark("folder_i2i", include_self="false", **folder_i2i(tmp_path)).load(tmp_path)
    assert not excluded.include_self


def test_folder_i2i_needs_a_path_and_rejects_loose_images(tmp_path):
    with pytest.raises(ConfigError, match="needs the option 'path'"):
        create_benchmark("folder_i2i")
    options = folder_i2i(tmp_path)
    touch(tmp_path / "mine", "loose.jpg")
    with pytest.raises(InputError, match=r"loose\.jpg"):
        create_benchmark("folder_i2i", **options).load(tmp_path)


def test_folder_knn_shares_the_index_label_space(tmp_path):
    data = create_benchmark("folder_knn", **folder_knn(tmp_path)).load(tmp_path)
    assert labels(data.index) == [0, 1, 2]  # cat, cow, dog
    assert [p.parent.name for p in data.queries.paths] == ["cow", "dog"]
    assert labels(data.queries) == [1, 2] and data.num_classes == 3


def test_folder_knn_unknown_query_class_fails(tmp_path):
    options = folder_knn(tmp_path)
    touch(tmp_path / "queries", "horse/q.jpg")
    with pytest.raises(InputError, match="horse"):
        create_benchmark("folder_knn", **options).load(tmp_path)


def test_folder_knn_missing_folder_is_named(tmp_path):
    options = folder_knn(tmp_path) | {"queries": str(tmp_path / "nowhere")}
    with pytest.raises(DatasetMissingError, match="nowhere: folder not found"):
        create_benchmark("folder_knn", **options).check(tmp_path)


def test_captions_jsonl_lists_and_pipes_with_a_distractor(tmp_path):
    data = create_benchmark("captions_t2i", **captions_t2i(tmp_path)).load(tmp_path)
    assert [p.name for p in data.images.paths] == ["a.jpg", "b.jpg", "c.jpg"]
    assert data.captions == ("an apple", "a red apple", "fruit", "a bird", "a small bird")
    assert data.caption_image.tolist() == [0, 0, 0, 1, 1]  # c.jpg has no captions: a distractor


def test_captions_csv(tmp_path):
    touch(tmp_path, "img/x.jpg", "img/y.jpg")
    manifest = write(tmp_path / "m.csv", 'image,captions\nimg/y.jpg,"[""why"", ""wye""]"\nimg/x.jpg,ex\n')
    data = create_benchmark("captions_t2i", manifest=str(manifest)).load(tmp_path)
    assert data.captions == ("ex", "why", "wye") and data.caption_image.tolist() == [0, 1, 1]


def test_captions_duplicate_rows_fail(tmp_path):
    touch(tmp_path, "img/x.jpg")
    manifest = write(tmp_path / "m.csv", "path,captions\nimg/x.jpg,a\nimg/x.jpg,b\n")
    with pytest.raises(InputError, match="listed twice"):
        create_benchmark("captions_t2i", manifest=str(manifest)).load(tmp_path)


def test_classnames_tab_form_allows_classes_without_images(tmp_path):
    data = create_benchmark("classnames_zeroshot", **classnames_zeroshot(tmp_path)).load(tmp_path)
    assert data.classnames == ("domestic cat", "small bird", "dog")
    assert [p.parent.name for p in data.images.paths] == ["cat", "cat", "dog"]
    assert labels(data.images) == [0, 0, 2]
    assert data.templates == openai_templates()


def test_classnames_plain_form_names_sorted_folders_and_custom_templates(tmp_path):
    options = classnames_zeroshot(tmp_path)
    write(tmp_path / "names.txt", "a cat\na dog\n")
    templates = write(tmp_path / "t.txt", "a photo of {}.\n\nart of {}\n")
    data = create_benchmark("classnames_zeroshot", templates=str(templates), **options).load(tmp_path)
    assert data.classnames == ("a cat", "a dog") and labels(data.images) == [0, 0, 1]
    assert data.templates == ("a photo of {}.", "art of {}")


def test_classnames_errors(tmp_path):
    options = classnames_zeroshot(tmp_path)
    write(tmp_path / "names.txt", "only one\n")
    with pytest.raises(InputError, match="1 names for 2 class folders"):
        create_benchmark("classnames_zeroshot", **options).load(tmp_path)
    write(tmp_path / "names.txt", "cat\tcat\n")
    with pytest.raises(InputError, match="no class for the folder"):
        create_benchmark("classnames_zeroshot", **options).load(tmp_path)
    write(tmp_path / "names.txt", "cat\tcat\ndog\tdog\n")
    bad = write(tmp_path / "t.txt", "a photo of a thing\n")
    with pytest.raises(InputError, match="exactly one"):
        create_benchmark("classnames_zeroshot", templates=str(bad), **options).load(tmp_path)
