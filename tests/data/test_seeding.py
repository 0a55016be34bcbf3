"""Augmentation is a function of (seed, epoch, position): not of the worker count, the global generators
or where an epoch was resumed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from mcip.data import (
    EpochBatchSampler,
    ResumableLoader,
    ResumableShardLoader,
    ShardDataset,
    class_index,
    collate_images,
    read_image_folder,
    write_shards,
)
from mcip.data.seeding import item_seeds, seeded_rngs
from tests.data.conftest import to_pixels


class RandomItems(Dataset):
    """Item i: one draw from each generator an augmentation may use (torch, ``random``, numpy)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> tuple:
        return i, float(torch.rand(())), random.random(), float(np.random.rand())


def _items(batch: list) -> list:
    return batch


def _draws(loader: ResumableLoader, epoch: int, start: int = 0) -> list[tuple]:
    return [item for batch in loader.iterate(epoch, start) for item in batch]


def _loader(num_workers: int) -> ResumableLoader:
    return ResumableLoader(RandomItems(), EpochBatchSampler(12, 3, seed=4), _items, num_workers=num_workers)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_draws_depend_on_seed_epoch_and_position_only(num_workers) -> None:
    loader = _loader(num_workers)
    torch.manual_seed(0)
    full = _draws(loader, 1)
    torch.manual_seed(123)  # the global generator at the start of the epoch does not matter
    assert _draws(loader, 1) == full
    assert _draws(_loader(0), 1) == full  # nor does the worker count
    assert _draws(loader, 1, start=2) == full[6:]  # a resumed epoch is the tail of the whole one
    by_index = {item[0]: item[1:] for item in full}
    other_epoch = {item[0]: item[1:] for item in _draws(loader, 2)}
    assert all(by_index[i] != other_epoch[i] for i in range(12))  # each epoch augments anew
    assert len({d for draws in by_index.values() for d in draws}) == 36  # no two draws alike


def test_the_seed_changes_every_draw() -> None:
    seeded = ResumableLoader(RandomItems(), EpochBatchSampler(12, 3, seed=4), _items, seed=9)
    assert seeded.seed == 9 and _loader(0).seed == 4  # default: the sampler's seed
    ours, theirs = sorted(_draws(seeded, 0)), sorted(_draws(_loader(0), 0))
    assert all(a[0] == b[0] and a[1:] != b[1:] for a, b in zip(ours, theirs, strict=True))


def test_loading_in_this_process_leaves_the_global_generators_alone() -> None:
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    _draws(_loader(0), 0)  # the DataLoader's own base seed comes from its per-epoch generator too
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


class Repeats:
    """A batch sampler whose one batch names index 0 twice."""

    seed, rank, world_size = 0, 0, 1

    def set_epoch(self, epoch: int) -> None: ...

    def set_start(self, batch: int) -> None: ...

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield [0, 0, 1]


def test_an_index_drawn_twice_in_a_batch_is_augmented_twice() -> None:
    (first, second, _) = _draws(ResumableLoader(RandomItems(), Repeats(), _items), 0)
    assert first[0] == second[0] == 0 and first[1:] != second[1:]


def test_seeded_rngs_restores_and_keys_differ() -> None:
    before = torch.get_rng_state()
    with seeded_rngs(1, 2, 3):
        a = torch.rand(2)
    with seeded_rngs(1, 2, 3):
        assert torch.equal(torch.rand(2), a)
    with seeded_rngs(1, 2, 4):
        assert not torch.equal(torch.rand(2), a)
    assert torch.equal(torch.get_rng_state(), before)
    assert item_seeds(-1, 0) != item_seeds(1, 0) and item_seeds(-1, 0) == item_seeds(2**64 - 1, 0)


def test_shard_resume_without_workers_augments_the_same(tmp_path, image_folder) -> None:
    recs = read_image_folder(image_folder)
    paths = write_shards(recs, tmp_path / "shards", per_shard=3)

    def jitter(img) -> torch.Tensor:  # a random augmentation through torch's global generator
        return to_pixels(img) + torch.rand(())

    dataset = ShardDataset(paths, jitter, class_index(recs), seed=1, shuffle_buffer=4)
    loader = ResumableShardLoader(dataset, 2, collate_images, num_records=len(recs))
    full = list(loader.iterate(1))
    tail = list(loader.iterate(1, start_batch=4))
    for a, b in zip(full[4:], tail, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["pixels"], b["pixels"])


def test_a_batched_fetch_gives_the_items_of_single_fetches() -> None:
    from mcip.data.seeding import SeededItems

    items = SeededItems(RandomItems())
    batch = [(i, (4, 0, 7, j, i)) for j, i in enumerate([3, 1, 3, 0])]
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    expected = torch.rand(2), random.random(), np.random.rand()
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    together = items.__getitems__(batch)
    assert (torch.rand(2).tolist(), random.random(), np.random.rand()) == (
        expected[0].tolist(),
        *expected[1:],
    )
    assert together == [items[t] for t in batch]
    assert together[0] != together[2]  # index 3 twice, at two positions: two draws


class TorchOnlyItems(Dataset):
    """Item i: two draws from torch's generator; it says so (``rngs_used``)."""

    rngs_used = ("torch",)

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> tuple:
        return i, torch.rand(2).tolist()


def test_a_dataset_that_names_its_generators_gets_the_same_draws() -> None:
    """Seeding only torch's generator (Re-A's cached captions) gives each item the draws it gets when
    every generator is seeded: the reference seeds all three with seeded_rngs and draws by hand."""
    from mcip.data.seeding import SeededItems

    batch = [(i, (4, 0, 7, j, i)) for j, i in enumerate([3, 1, 3, 0, 11])]
    expected = []
    for i, key in batch:
        with seeded_rngs(*key):
            expected.append((i, torch.rand(2).tolist()))
    assert SeededItems(TorchOnlyItems()).__getitems__(batch) == expected
    random.seed(9)
    before = random.random()
    random.seed(9)
    SeededItems(TorchOnlyItems()).__getitems__(batch)
    assert random.random() == before  # the caller's generators come back as they were


def test_generators_of_the_datasets() -> None:
    from mcip.data.pairs import SampledCaptionDataset
    from mcip.data.records import ImageRecord
    from mcip.data.seeding import rngs_of

    records = [ImageRecord(id="a", path="a.png", label="x", captions=["one", "two"])]
    assert rngs_of(SampledCaptionDataset(records)) == ("torch",)
    assert rngs_of(SampledCaptionDataset(records, RandomItems())) == ("torch", "random", "numpy")
    assert rngs_of(RandomItems()) == ("torch", "random", "numpy")

    class Odd(RandomItems):
        rngs_used = ("torch", "cuda")

    with pytest.raises(ValueError, match="unknown generators"):
        rngs_of(Odd())
