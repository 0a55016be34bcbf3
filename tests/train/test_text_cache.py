"""Re-A's cache of the frozen lower text blocks (mcip.stages.text_cache): same loss and gradients as the
full tower, ragged storage, reuse and invalidation, fallback."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mcip
import mcip.stages.text_cache as text_cache
from mcip.data import ImageRecord
from mcip.data.pairs import CollatePairs, SampledCaptionDataset
from mcip.errors import UnsupportedError
from mcip.losses import InfoNCELoss
from mcip.models import unlock_last_text_blocks
from mcip.stages.realign import RealignTask
from mcip.stages.text_cache import cached_text_hidden, realign_text_cache
from tests.conftest import BACKEND_CASES

CAPTIONS = [
    ("a photo of a dog", "a small dog"),
    ("a red car",),
    ("two small birds in a tree", "a drawing of a bird", "one bird"),
    ("a green apple on the tree",),
    ("a house", "a large blue house with a tree"),
    ("smiling face",),
]


def _records() -> list[ImageRecord]:
    return [ImageRecord(str(i), Path(f"{i}.png"), f"c{i}", caps) for i, caps in enumerate(CAPTIONS)]


def _texts(records) -> list[str]:
    return [c for r in records for c in r.captions]


def _model(model_specs, name):
    torch.manual_seed(0)
    kwargs = dict(model_specs[name])
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


def _batch(model, records) -> dict:
    torch.manual_seed(3)
    dataset = SampledCaptionDataset(records)
    return CollatePairs(model.tokenize)([dataset[j] for j in range(len(dataset))])


def _loss_and_grads(task, batch):
    task.model.zero_grad(set_to_none=True)
    loss = task(batch)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in task.model.net.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("name", BACKEND_CASES)
@pytest.mark.parametrize("n_last", [1, "all"])
def test_cached_task_has_the_loss_and_gradients_of_the_full_tower(model_specs, name, n_last, tmp_path):
    model = _model(model_specs, name)  # eval mode: the frozen blocks run without dropout in both paths
    n_last = len(model.text_block_prefixes()) if n_last == "all" else n_last
    trainable = set(unlock_last_text_blocks(model, n_last))
    records = _records()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((len(records), model.embed_dim)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    batch = _batch(model, records)
    ref_loss, ref_grads = _loss_and_grads(RealignTask(model, images, InfoNCELoss()), batch)
    cache = cached_text_hidden(model, _texts(records), n_last, tmp_path, dtype="float32")
    cached_batch = {k: v for k, v in batch.items() if k != "tokens"}  # the cached path needs no tokens
    loss, grads = _loss_and_grads(RealignTask(model, images, InfoNCELoss(), cache), cached_batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and grads.keys() <= trainable
    assert {n for n in trainable if "logit_bias" not in n} <= grads.keys()  # InfoNCE has no bias
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-4, atol=2e-5, msg=n)  # float32 noise
    half = cached_text_hidden(model, _texts(records), n_last, tmp_path)  # float16 storage (the default)
    half_loss, _ = _loss_and_grads(RealignTask(model, images, InfoNCELoss(), half), cached_batch)
    torch.testing.assert_close(half_loss, ref_loss, rtol=2e-3, atol=2e-3)


def test_storage_is_ragged_without_padding(model_specs, tmp_path):
    model = _model(model_specs, "openclip")  # pads every caption to 77 tokens
    texts = _texts(_records())
    cache = cached_text_hidden(model, texts, 1, tmp_path)
    lengths = model.text_hidden_lengths(model.tokenize(texts))
    assert len(cache) == len(texts)
    assert (
        cache.hidden.features.shape == (int(lengths.sum()), 32) and int(lengths.sum()) < 77 * len(texts) / 4
    )
    assert cache.hidden.features.dtype == np.float16 and isinstance(cache.hidden.features, np.memmap)
    hidden, tokens = cache.batch(torch.tensor([2, 0]), "cpu", torch.float32)
    assert hidden.shape == (2, int(lengths[[2, 0]].max()), 32) and set(tokens) == {"input_ids"}
    short = int(lengths[0])
    assert torch.all(hidden[1, short:] == 0) and torch.all(tokens["input_ids"][1, short:] == 0)
    with torch.no_grad():
        full = model.text_hidden_below(model.tokenize([texts[0]]), 1)[0, :short]
    torch.testing.assert_close(hidden[1, :short], full, rtol=1e-3, atol=1e-3)  # float16 storage


def _counting(monkeypatch) -> dict:
    calls = {"rows": 0, "layout": 0}
    rows, layout = text_cache._hidden_rows, text_cache._layout

    def count_rows(*args, **kwargs):
        calls["rows"] += 1
        return rows(*args, **kwargs)

    def count_layout(*args, **kwargs):
        calls["layout"] += 1
        return layout(*args, **kwargs)

    monkeypatch.setattr(text_cache, "_hidden_rows", count_rows)
    monkeypatch.setattr(text_cache, "_layout", count_layout)
    return calls


def test_cache_is_reused_and_invalidated_by_texts_blocks_and_weights(model_specs, tmp_path, monkeypatch):
    model = _model(model_specs, "composed")
    texts = _texts(_records())
    calls = _counting(monkeypatch)
    first = cached_text_hidden(model, texts, 1, tmp_path)
    assert calls == {"rows": 1, "layout": 1}
    again = cached_text_hidden(model, texts, 1, tmp_path)
    assert calls == {"rows": 1, "layout": 1}  # read back, nothing recomputed or re-tokenized
    np.testing.assert_array_equal(np.asarray(again.hidden.features), np.asarray(first.hidden.features))
    np.testing.assert_array_equal(again.hidden.offsets, first.hidden.offsets)
    cached_text_hidden(model, [*texts[:-1], "a blue car"], 1, tmp_path)
    assert calls["rows"] == 2  # other captions
    cached_text_hidden(model, texts, 2, tmp_path)
    assert calls["rows"] == 3  # other unlocked count
    with torch.no_grad():
        model.net.text.embeddings.word_embeddings.weight.add_(0.01)
    cached_text_hidden(model, texts, 1, tmp_path)
    assert calls["rows"] == 4  # other text-tower weights
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 4


def test_stage_helper_follows_the_switch_and_falls_back_when_unsupported(
    model_specs, tmp_path, monkeypatch, caplog
):
    model = _model(model_specs, "composed")
    records = _records()
    cfg = SimpleNamespace(realign_text_cache=True, unlock_text_blocks=1)
    cache = realign_text_cache(model, cfg, records, tmp_path)
    assert cache is not None and len(cache) == len(_texts(records)) and cache.n_last == 1
    off = SimpleNamespace(realign_text_cache=False, unlock_text_blocks=1)
    assert realign_text_cache(model, off, records, tmp_path / "off") is None
    assert not (tmp_path / "off").exists()

    def unsupported(tokens, n_last):
        raise UnsupportedError("this tower cannot be split; set realign_text_cache=false.")

    monkeypatch.setattr(model, "text_hidden_below", unsupported)
    with caplog.at_level(logging.WARNING, logger="mcip.stages.text_cache"):
        assert realign_text_cache(model, cfg, records, tmp_path / "unsupported") is None
    assert "full text tower" in caplog.text and "cannot be split" in caplog.text


def test_towers_that_cannot_be_split_say_so(model_specs, tmp_path):
    from mcip.models.base import EmbeddingModel

    model = _model(model_specs, "composed")
    tokens = model.tokenize(["a dog"])
    with pytest.raises(UnsupportedError, match="realign_text_cache=false"):
        EmbeddingModel.text_hidden_below(model, tokens, 1)
    model.net.text.config.model_type = "mpnet"  # a tower whose encoder adds its own position bias
    with pytest.raises(UnsupportedError, match="BERT-style"):
        model.text_hidden_below(tokens, 1)


def test_an_interrupted_cache_resumes_where_it_stopped(model_specs, tmp_path, monkeypatch):
    model = _model(model_specs, "hf-clip")
    texts = _texts(_records())
    reference = cached_text_hidden(model, texts, 1, tmp_path / "whole")
    monkeypatch.setattr(text_cache, "CHUNK_CAPTIONS", 2)  # several chunks, the second one fails
    rows, calls = text_cache._hidden_rows, []

    def failing(*args, **kwargs):
        calls.append(args[-2:])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return rows(*args, **kwargs)

    monkeypatch.setattr(text_cache, "_hidden_rows", failing)
    with pytest.raises(KeyboardInterrupt):
        cached_text_hidden(model, texts, 1, tmp_path / "resumed")
    resumed = cached_text_hidden(model, texts, 1, tmp_path / "resumed")
    assert calls[2][0] == calls[1][0] > 0  # restarted at the failed chunk, not at row 0
    np.testing.assert_array_equal(np.asarray(resumed.hidden.features), np.asarray(reference.hidden.features))
    np.testing.assert_array_equal(np.asarray(resumed.tokens.features), np.asarray(reference.tokens.features))
    with pytest.raises(mcip.InputError, match="No captions"):
        cached_text_hidden(model, [], 1, tmp_path)


def _partitions(items: list[int]):
    """Every set partition of ``items`` (a naive recursion; Bell(n) of them)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        yield [[first], *part]
        for k in range(len(part)):
            yield [*part[:k], [first, *part[k]], *part[k + 1 :]]


def _chunk_cost(lengths, chunks, row_cost) -> int:
    return sum(len(c) * max(lengths[i] for i in c) + row_cost for c in chunks)


@pytest.mark.parametrize("row_cost", [0, 3, 10, 1000])
def test_length_chunks_are_the_cheapest_split_of_all_partitions(row_cost):
    rng = np.random.default_rng(row_cost)
    for _ in range(25):
        lengths = rng.integers(1, 12, size=int(rng.integers(1, 8))).tolist()
        chunks = text_cache.length_chunks(lengths, row_cost)
        flat = np.concatenate(chunks)
        assert sorted(flat.tolist()) == list(range(len(lengths)))  # each position exactly once
        assert all(np.all(np.diff(c) > 0) for c in chunks)
        best = min(_chunk_cost(lengths, p, row_cost) for p in _partitions(list(range(len(lengths)))))
        assert _chunk_cost(lengths, [c.tolist() for c in chunks], row_cost) == best
    assert [c.tolist() for c in text_cache.length_chunks([], 5)] == [[]]
    assert len(text_cache.length_chunks([3, 3, 20, 3], 10**6)) == 1  # chunks too dear: the whole batch


@pytest.mark.parametrize("name", BACKEND_CASES)
def test_chunked_batches_have_the_loss_and_gradients_of_the_whole_batch(
    model_specs, name, tmp_path, monkeypatch
):
    model = _model(model_specs, name)  # eval mode: no dropout, so chunks and whole batch compute alike
    unlock_last_text_blocks(model, 1)
    records = _records()
    rng = np.random.default_rng(1)
    images = rng.standard_normal((len(records), model.embed_dim)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    cache = cached_text_hidden(model, _texts(records), 1, tmp_path, dtype="float32")
    batch = {k: v for k, v in _batch(model, records).items() if k != "tokens"}
    distinct = len(set(cache.lengths(batch["caption_index"]).tolist()))  # 1: SigLIP pads to a fixed length
    task = RealignTask(model, images, InfoNCELoss(), cache)
    whole_encode, chunks = cache.encode, []
    monkeypatch.setattr(cache, "encode", lambda m, index: whole_encode(m, index, chunked=False))
    ref_loss, ref_grads = _loss_and_grads(task, batch)
    monkeypatch.setattr(cache, "encode", whole_encode)
    monkeypatch.setitem(text_cache.CHUNK_ROW_COST, "cpu", 0)  # free chunks: one per distinct length
    from_hidden = model.text_features_from_hidden

    def counted(hidden, tokens, n_last):
        chunks.append(hidden.shape)
        return from_hidden(hidden, tokens, n_last)

    monkeypatch.setattr(model, "text_features_from_hidden", counted)
    loss, grads = _loss_and_grads(task, batch)
    assert len(chunks) == distinct and sum(s[0] for s in chunks) == len(batch["caption_index"])
    assert distinct > 2 or name == "hf-siglip"
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for n, g in grads.items():
        torch.testing.assert_close(g, ref_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    emb = cache.encode(model, batch["caption_index"])  # the rows come back in the batch's order
    torch.testing.assert_close(
        emb, whole_encode(model, batch["caption_index"], chunked=False), atol=1e-5, rtol=0
    )


def test_repeated_captions_are_stored_once_and_read_back_per_caption(model_specs, tmp_path):
    """Captions shared by several images (templates, class names) are cached once; every caption index
    still reads its own states and encodes to the full tower's embedding."""
    model = _model(model_specs, "composed")
    distinct = ["a photo of a dog", "a red car", "two small birds in a tree"]
    texts = [distinct[i] for i in (0, 1, 0, 2, 1, 0)]  # 6 captions, 3 distinct
    cache = cached_text_hidden(model, texts, 1, tmp_path)
    lengths = model.text_hidden_lengths(model.tokenize(distinct))
    assert len(cache) == 6 and cache.hidden.features.shape[0] == int(lengths.sum())  # each stored once
    assert cache.index.tolist() == [0, 1, 0, 2, 1, 0]
    assert cache.lengths([3, 2]).tolist() == [int(lengths[2]), int(lengths[0])]
    with torch.no_grad():
        got = cache.encode(model, torch.arange(6))
        want = model.encode_text(texts)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)  # float16 storage
