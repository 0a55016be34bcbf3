"""The manifest benchmarks (manifest_i2i, manifest_knn, manifest_zeroshot, captions_t2i:match=label): the
same data as the folder benchmarks on the same images, split options, class names and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mcip.errors import ConfigError, InputError
from mcip.eval.benchmarks import DatasetMissingError, create_benchmark
from mcip.eval.protocols import evaluate_t2i
from tests.eval.benchmarks.synth import labels, manifest_rows, touch, write

CLASSES = ("cat", "dog", "red_fox")


def two_layouts(root, fmt="csv"):
    """One synthetic set as a folder layout (``imgs/<split>/<class>/<i>.jpg``) and as a manifest listing
    the same files with a split column; the manifest lists the rows in a shuffled order."""
    rows = []
    for split, per_class in (("train", 3), ("test", 2)):
        for label in CLASSES:
            for i in range(per_class):
                rows.append({"path": f"{split}/{label}/{i}.jpg", "label": label, "split": split})
    touch(root / "imgs", *(r["path"] for r in rows))
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    manifest = root / "imgs" / f"m.{fmt}"
    if fmt == "csv":
        write(
            manifest, "path,label,split\n" + "".join(f"{r['path']},{r['label']},{r['split']}\n" for r in rows)
        )
    elif fmt == "jsonl":
        write(manifest, "".join(json.dumps(r) + "\n" for r in rows))
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), manifest)
    names = write(root / "names.tsv", "".join(f"{c}\t{c.replace('_', ' ')}\n" for c in CLASSES))
    return manifest, names


def same_images(a, b):
    assert a.paths == b.paths and np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_benchmarks_load_what_the_folder_benchmarks_load(tmp_path, fmt):
    manifest, names = two_layouts(tmp_path, fmt)
    imgs = tmp_path / "imgs"
    folder = create_benchmark("folder_i2i", path=imgs / "test").load(tmp_path)
    mine = create_benchmark("manifest_i2i", manifest=manifest, split="test").load(tmp_path)
    same_images(folder.images, mine.images)
    assert mine.include_self and mine.metric == "map"
    folder = create_benchmark("folder_knn", index=imgs / "train", queries=imgs / "test").load(tmp_path)
    mine = create_benchmark("manifest_knn", manifest=manifest).load(tmp_path)  # index=train, query=test
    same_images(folder.index, mine.index)
    same_images(folder.queries, mine.queries)
    assert folder.num_classes == mine.num_classes == 3
    folder = create_benchmark("classnames_zeroshot", images=imgs / "test", classnames=names).load(tmp_path)
    mine = create_benchmark("manifest_zeroshot", manifest=manifest, split="test", names=names).load(tmp_path)
    same_images(folder.images, mine.images)
    assert folder.classnames == mine.classnames == ("cat", "dog", "red fox")
    assert folder.templates == mine.templates


def test_every_row_without_split_and_labels_as_class_names(tmp_path):
    manifest, _ = two_layouts(tmp_path)
    data = create_benchmark("manifest_zeroshot", manifest=manifest).load(tmp_path)
    assert len(data.images.paths) == 15 and data.classnames == ("cat", "dog", "red fox")
    assert labels(data.images)[:7] == [0, 0, 1, 1, 2, 2, 0]  # sorted by path: test/..., then train/...
    everything = create_benchmark("manifest_i2i", manifest=manifest, include_self="false").load(tmp_path)
    assert len(everything.images.paths) == 15 and not everything.include_self


def test_root_option_resolves_relative_paths(tmp_path):
    manifest, _ = two_layouts(tmp_path)
    moved = write(tmp_path / "elsewhere" / "m.csv", manifest.read_text())
    absent = pytest.warns(UserWarning, match="15 of the 15 images of the manifest are not found")
    with absent, pytest.raises(DatasetMissingError, match="none of the images"):
        create_benchmark("manifest_i2i", manifest=moved).load(tmp_path)
    data = create_benchmark("manifest_i2i", manifest=moved, root=tmp_path / "imgs").load(tmp_path)
    assert all(p.is_relative_to(tmp_path / "imgs") for p in data.images.paths)


def test_knn_split_options(tmp_path):
    manifest = manifest_rows(tmp_path)  # train: cat, cow, dog; test: cow, dog
    data = create_benchmark("manifest_knn", manifest=manifest).load(tmp_path)
    assert labels(data.index) == [0, 1, 2] and labels(data.queries) == [1, 2] and data.num_classes == 3
    swapped = create_benchmark("manifest_knn", manifest=manifest, index="test", query="test").load(tmp_path)
    assert labels(swapped.index) == labels(swapped.queries) == [0, 1] and swapped.num_classes == 2
    with pytest.raises(InputError, match=r"labels 'cat' of split 'train' have no image in split 'test'"):
        create_benchmark("manifest_knn", manifest=manifest, index="test", query="train").load(tmp_path)
    assert create_benchmark("manifest_knn", manifest=manifest).spec == f"manifest_knn:manifest={manifest}"


def test_a_missing_split_names_the_splits_present(tmp_path):
    manifest = manifest_rows(tmp_path)
    with pytest.raises(InputError, match=r"no rows in split 'val'; the splits present are 'test', 'train'"):
        create_benchmark("manifest_knn", manifest=manifest, query="val").load(tmp_path)
    flat = write(tmp_path / "flat.csv", "path,label\nm/dog/1.jpg,dog\n")
    with pytest.raises(InputError, match="has no 'split' column"):
        create_benchmark("manifest_i2i", manifest=flat, split="test").load(tmp_path)
    with pytest.raises(ConfigError, match="expected a split name"):
        create_benchmark("manifest_i2i", manifest=flat, split=" ")


def test_labels_missing_from_the_names_file_are_listed(tmp_path):
    rows = "path,label\n" + "".join(f"x/{c}.jpg,{c}\n" for c in "abcdefgh")
    manifest = write(tmp_path / "m.csv", rows)
    touch(tmp_path, *(f"x/{c}.jpg" for c in "abcdefgh"))
    names = write(tmp_path / "names.tsv", "a\tan a\nb\ta b\n")
    with pytest.raises(InputError) as info:
        create_benchmark("manifest_zeroshot", manifest=manifest, names=names).load(tmp_path)
    message = str(info.value)
    assert "6 of the 8 labels" in message and "'c', 'd', 'e', 'f', 'g' (and 1 more)" in message
    assert "label<TAB>name" in message
    write(tmp_path / "names.tsv", "a\tan a\nb no tab\n")
    with pytest.raises(InputError, match="line 2: expected 'label<TAB>name'"):
        create_benchmark("manifest_zeroshot", manifest=manifest, names=names).load(tmp_path)


def test_absent_files_are_skipped_counted_and_warned(tmp_path):
    manifest = manifest_rows(tmp_path)
    (tmp_path / "m" / "cat" / "1.jpg").unlink()
    (tmp_path / "m" / "dog" / "2.jpg").unlink()
    with pytest.warns(UserWarning, match=r"2 of the 5 images of the manifest are not found"):
        data = create_benchmark("manifest_i2i", manifest=manifest).load(tmp_path)
    assert [p.relative_to(tmp_path / "m").as_posix() for p in data.images.paths] == [
        "cow/1.jpg",
        "cow/2.jpg",
        "dog/1.jpg",
    ]
    assert data.images.skipped == 2
    with pytest.warns(UserWarning) as caught:
        knn = create_benchmark("manifest_knn", manifest=manifest).load(tmp_path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 of the 3 images of split 'train' are not found" in messages
    assert "1 of the 2 images of split 'test' are not found" in messages
    assert knn.index.skipped == 1 and knn.queries.skipped == 1


def test_a_folder_or_a_bad_row_fails_with_the_fix(tmp_path):
    touch(tmp_path, "imgs/dog/1.jpg")
    with pytest.raises(InputError, match="folder_i2i:path=DIR"):
        create_benchmark("manifest_i2i", manifest=tmp_path / "imgs").check(tmp_path)
    bad = write(tmp_path / "m.jsonl", json.dumps({"path": "imgs/dog/1.jpg", "label": None}) + "\n")
    with pytest.raises(InputError, match="row 1: 'label' is null"):
        create_benchmark("manifest_i2i", manifest=bad).load(tmp_path)


def test_captions_match_label_queries_by_class(tmp_path):
    manifest = manifest_rows(tmp_path)
    data = create_benchmark("captions_t2i", manifest=manifest, match="label").load(tmp_path)
    assert data.match_labels and labels(data.images) == [0, 1, 1, 2, 2]  # cat, cow x2, dog x2
    assert data.captions == ("cat", "cow", "a cow", "cattle", "dog", "a dog", "a puppy")
    assert data.caption_image.tolist() == [0, 1, 1, 1, 3, 3, 3]  # each class's first image
    names = write(tmp_path / "names.tsv", "dog\tDog\ncat\tHouse cat\ncow\tcattle\n")
    named = create_benchmark("captions_t2i", manifest=manifest, match="label", names=names).load(tmp_path)
    assert named.captions == ("House cat", "cattle", "a cow", "Dog", "a dog", "a puppy")
    test = create_benchmark("captions_t2i", manifest=manifest, match="label", names="none", split="test")
    assert test.load(tmp_path).captions == ("a dog", "a puppy")  # cow has no query, stays a distractor
    with pytest.raises(ConfigError, match="names= applies to match=label only"):
        create_benchmark("captions_t2i", manifest=manifest, names="none")


def test_captions_match_label_against_a_naive_loop(tmp_path):
    rows = []
    for n in range(24):
        label = f"class_{n % 5}"
        rows.append({"path": f"p/{n:02d}.jpg", "label": label, "captions": [f"desc {n % 5}", f"img {n}"]})
    touch(tmp_path, *(r["path"] for r in rows))
    manifest = write(tmp_path / "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    data = create_benchmark("captions_t2i", manifest=manifest, match="label").load(tmp_path)
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.normalize(torch.randn(len(data.images.paths), 6, generator=g), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(len(data.captions), 6, generator=g), dim=1)
    owner = torch.as_tensor(data.caption_image)
    got = evaluate_t2i(images, texts, owner, ks=(1, 5), image_labels=torch.as_tensor(data.images.labels))
    # naive: a query's class is the label written in its row of the manifest
    label_of = {r["path"]: r["label"] for r in rows}
    image_class = [label_of[p.relative_to(tmp_path).as_posix()] for p in data.images.paths]
    query_class = [image_class[int(o)] for o in owner]
    for k in (1, 5):
        hits = 0
        for t in range(len(texts)):
            ranking = sorted(range(len(images)), key=lambda j: (-float(texts[t] @ images[j]), j))
            hits += any(image_class[j] == query_class[t] for j in ranking[:k])
        assert got[f"recall@{k}"] == pytest.approx(100 * hits / len(texts))
        hits = 0
        for i in range(len(images)):
            ranking = sorted(range(len(texts)), key=lambda t: (-float(images[i] @ texts[t]), t))
            hits += any(query_class[t] == image_class[i] for t in ranking[:k])
        assert got[f"i2t_recall@{k}"] == pytest.approx(100 * hits / len(images))
    # every class's name and its distinct descriptions are queries, each image's own caption too
    assert len(data.captions) == 5 + 5 + 24


def test_captions_match_image_skips_absent_images(tmp_path):
    manifest = manifest_rows(tmp_path)
    (tmp_path / "m" / "cow" / "1.jpg").unlink()
    with pytest.warns(UserWarning, match="1 of the 5 images"):
        data = create_benchmark("captions_t2i", manifest=manifest).load(tmp_path)
    assert data.captions == ("a dog", "a dog", "a puppy") and data.images.skipped == 1
    assert data.caption_image.tolist() == [2, 3, 3]  # cat/1, cow/2, dog/1, dog/2
