"""Image-to-image adapters: GPR1200, INSTRE, CUB, revisited Oxford/Paris."""

from __future__ import annotations

import numpy as np
import pytest

from mcip.errors import InputError
from mcip.eval.benchmarks import DatasetMissingError, create_benchmark
from mcip.eval.benchmarks.gpr1200 import gpr1200_subsets
from tests.eval.benchmarks.synth import cub, gpr1200, instre, labels, revisited, touch


def test_gpr1200_file_order_labels_and_proportional_subsets(tmp_path):
    gpr1200(tmp_path)
    data = create_benchmark("gpr1200").load(tmp_path)
    names = [p.name for p in data.images.paths]
    assert names[:4] == ["0_a.jpg", "0_b.jpg", "2_a.jpg", "2_b.jpg"] and names[-1] == "101_b.jpg"
    assert labels(data.images) == [0, 0, 2, 2, 10, 10, 11, 11, 100, 100, 101, 101]
    assert data.include_self and data.metric == "map"
    assert data.subsets == (
        ("landmarks", 0, 2),
        ("inat", 2, 4),
        ("sketch", 4, 6),
        ("instre", 6, 8),
        ("sop", 8, 10),
        ("faces", 10, 12),
    )


def test_gpr1200_subsets_are_the_official_2000_image_slices_on_the_full_set():
    full = np.repeat(np.arange(1200), 10)
    assert gpr1200_subsets(full) == tuple(
        (name, 2000 * i, 2000 * (i + 1))
        for i, name in enumerate(("landmarks", "inat", "sketch", "instre", "sop", "faces"))
    )
    assert gpr1200_subsets(np.array([0, 0, 1, 2, 3, 4, 5])) == ()  # not proportional: no subsets
    assert gpr1200_subsets(np.array([0, 1, 2, 3, 4])) == ()


def test_gpr1200_rejects_foreign_file_names(tmp_path):
    gpr1200(tmp_path)
    touch(tmp_path / "gpr1200" / "images", "thumbs.jpg")
    with pytest.raises(InputError, match=r"thumbs\.jpg"):
        create_benchmark("gpr1200").load(tmp_path)


def test_gpr1200_missing_names_the_images_folder_and_the_download(tmp_path):
    with pytest.raises(DatasetMissingError) as info:
        create_benchmark("gpr1200").check(tmp_path)
    assert str(tmp_path / "gpr1200" / "images") in str(info.value)
    assert "GPR1200.zip" in str(info.value)


def test_instre_labels_are_parent_folders(tmp_path):
    instre(tmp_path)
    data = create_benchmark("instre").load(tmp_path)
    rel = [p.relative_to(tmp_path / "instre").as_posix() for p in data.images.paths]
    assert rel == [
        "INSTRE-M/pair_1/1.JPG",
        "INSTRE-S1/obj_a/1.jpg",
        "INSTRE-S1/obj_b/1.jpg",
        "INSTRE-S1/obj_b/2.jpg",
    ]
    assert labels(data.images) == [0, 1, 2, 2]
    assert data.include_self and data.metric == "map"


def test_instre_rejects_an_image_without_a_class_folder(tmp_path):
    instre(tmp_path)
    touch(tmp_path / "instre", "loose.jpg")
    with pytest.raises(InputError, match=r"loose\.jpg"):
        create_benchmark("instre").load(tmp_path)


def test_cub_keeps_classes_101_to_200_labelled_from_zero(tmp_path):
    cub(tmp_path)
    data = create_benchmark("cub").load(tmp_path)
    rel = [p.relative_to(tmp_path / "CUB_200_2011" / "images").as_posix() for p in data.images.paths]
    assert rel == ["101.K/k1.jpg", "101.K/k2.jpg", "150.L/l1.jpg", "200.Z/z1.jpg"]
    assert labels(data.images) == [0, 0, 49, 99]
    assert not data.include_self and data.metric == "recall" and data.ks == (1, 2, 4, 8)


def test_cub_missing_image_is_named(tmp_path):
    cub(tmp_path)
    (tmp_path / "CUB_200_2011" / "images" / "150.L" / "l1.jpg").unlink()
    with pytest.raises(DatasetMissingError, match=r"150.L/l1.jpg: not found \(1 of the 4"):
        create_benchmark("cub").load(tmp_path)


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_revisited_keeps_the_pickle_order_and_ground_truth(name, tmp_path):
    revisited(name)(tmp_path)
    data = create_benchmark(name).load(tmp_path)
    assert [p.name for p in data.database.paths] == ["db_c.jpg", "db_a.jpg", "db_b.jpg"]
    assert [p.name for p in data.queries.paths] == ["q_1.jpg", "q_2.jpg"]
    assert data.database.labels is None and len(data.gnd) == 2
    assert data.gnd[0]["easy"].tolist() == [1] and data.gnd[0]["junk"].tolist() == [0]
    assert data.gnd[1]["easy"].dtype == np.int64 and data.gnd[1]["easy"].size == 0
    assert data.gnd[1]["hard"].tolist() == [0, 1]


def test_revisited_missing_gnd_names_the_file_and_revisitop(tmp_path):
    (tmp_path / "roxford5k" / "jpg").mkdir(parents=True)
    with pytest.raises(DatasetMissingError) as info:
        create_benchmark("roxford5k").check(tmp_path)
    assert str(tmp_path / "roxford5k" / "gnd_roxford5k.pkl") in str(info.value)
    assert "revisitop" in str(info.value)
