"""Evaluation text embeddings: length-ordered batches, one encoding per distinct string, a cache keyed by
the text tower's weights and the tokenised texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mcip
from mcip.eval import text_encoding as TE
from mcip.models.checkpoint import save_model
from mcip.models.tokenizer_identity import tokenizer_fingerprint

# very different lengths (1 word ... 40 words), repeats, and a class name in many templates
TEXTS = [
    "a",
    "a photo of a dog",
    " ".join(["word"] * 40),
    "a photo of a dog",
    "cat",
    "a blurry photo of a very small cat sitting on a long red sofa",
    "a",
    "dog dog dog dog dog dog dog",
]


def _model(spec: dict):
    kwargs = dict(spec)
    model = mcip.load_model(kwargs.pop("spec"), **kwargs)
    return model.eval()


@pytest.mark.parametrize("backend", ["openclip", "hf-clip", "hf-siglip", "composed"])
def test_length_ordered_embeddings_equal_one_unpadded_batch(model_specs, backend):
    """Per row, the reference is ``encode_text`` of that text alone (no padding at all) and of the whole
    list in one batch (padded to the longest): chunked, deduplicated encoding equals both."""
    model = _model(model_specs[backend])
    with torch.no_grad():
        whole = model.encode_text(TEXTS).float()
        alone = torch.cat([model.encode_text([t]).float() for t in TEXTS])
        got = TE.encode_texts_by_length(model, TEXTS, batch_size=2)
    assert got.shape == whole.shape
    assert (got - whole).abs().max() <= 1e-5
    assert (got - alone).abs().max() <= 1e-5


def test_length_order_trims_each_batch_to_its_longest(model_specs):
    """open_clip pads every prompt to its context length; a batch of short prompts runs only their
    positions (the token tensors handed to the tower are as wide as the batch's longest text)."""
    model = _model(model_specs["openclip"])
    widths = []
    real = model.text_features_from_hidden

    def spy(hidden, tokens, n_last):
        widths.append(int(tokens["input_ids"].shape[1]))
        return real(hidden, tokens, n_last)

    model.text_features_from_hidden = spy
    ordered = TE.LengthOrderedTexts(model, TEXTS)
    lengths = sorted(ordered.lengths.tolist())
    with torch.no_grad():
        ordered.encode([0, 1])
        ordered.encode([6, 7])
    assert widths == [max(lengths[0:2]), max(lengths[6:8])]
    assert widths[0] < widths[1] < model.tokenize(["a"])["input_ids"].shape[1]


def test_unique_texts_and_inverse():
    unique, inverse = TE.unique_texts(["b", "a", "b", "c", "a"])
    assert unique == ["b", "a", "c"]
    assert inverse.tolist() == [0, 1, 0, 2, 1]


def _rows_through_first_block(model) -> list[int]:
    """Batch sizes seen by the first text block (every path through the text tower runs it)."""
    rows: list[int] = []
    block = model.net.get_submodule(model.text_block_prefixes()[0])
    block.register_forward_hook(lambda _m, args, _out: rows.append(int(args[0].shape[0])))
    return rows


@pytest.mark.parametrize("batch_size", [100, 2])
def test_each_distinct_string_is_encoded_once(model_specs, batch_size):
    model = _model(model_specs["composed"])
    rows = _rows_through_first_block(model)
    TE.encode_texts_by_length(model, TEXTS, batch_size=batch_size)
    assert sum(rows) == 6  # 8 texts, 6 distinct
    assert rows == ([6] if batch_size == 100 else [2, 2, 2])


def test_cache_hits_an_identical_text_tower_in_another_folder(model_specs, tmp_path):
    """Train only the image side (as GPR-FT and MCIP do) and save to two folders: the second model reads
    the first one's cached rows (no encoder call); a changed text weight misses."""
    base = _model(model_specs["composed"])
    with torch.no_grad():
        next(p for n, p in base.net.named_parameters() if n.startswith("visual.")).add_(1.0)
    save_model(base, tmp_path / "a")
    save_model(base, tmp_path / "b")
    a, b = mcip.load_model(str(tmp_path / "a")), mcip.load_model(str(tmp_path / "b"))
    cache = tmp_path / "cache"
    first = TE.cached_text_embeddings_by_tower(a, TEXTS, cache)
    with torch.no_grad():
        reference = a.encode_text(TEXTS).float().numpy()
    assert np.abs(first - reference).max() <= 1e-5

    rows = _rows_through_first_block(b)
    second = TE.cached_text_embeddings_by_tower(b, TEXTS, cache)
    assert rows == []  # every cached row reused, its width read from the cache
    np.testing.assert_array_equal(second, first)

    with torch.no_grad():
        p = next(p for n, p in b.net.named_parameters() if b.part_of(n) == "text_encoder")
        p.mul_(1.5)
    rows.clear()
    changed = TE.cached_text_embeddings_by_tower(b, TEXTS, cache)
    assert sum(rows) == 2 + 6  # two one-row probes (widths), then all 6 distinct texts again
    with torch.no_grad():
        assert np.abs(changed - b.encode_text(TEXTS).float().numpy()).max() <= 1e-5


def test_text_fingerprint_ignores_the_image_side(model_specs):
    model = _model(model_specs["openclip"])
    before = TE.text_tower_fingerprint(model)
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            if model.part_of(name) in ("image_encoder", "image_projector", "logit_scale"):
                p.add_(0.5)
    assert TE.text_tower_fingerprint(model) == before
    with torch.no_grad():
        p = next(p for n, p in model.net.named_parameters() if model.part_of(n) == "text_projector")
        p.view(-1)[0] += 1e-3
    assert TE.text_tower_fingerprint(model) != before


def test_a_realigned_last_block_reuses_the_lower_blocks(model_specs, tmp_path):
    """Re-A trains the last text block (and the final norm and projector): the states below it come from
    the cache the starting model filled, only the last block runs, and the embeddings equal ``encode_text``
    of the changed model."""
    model = _model(model_specs["composed"])
    cache = tmp_path / "cache"
    TE.cached_text_embeddings_by_tower(model, TEXTS, cache)
    last = model.text_block_prefixes()[-1]
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            if name.startswith(last + ".") or model.part_of(name) == "text_projector":
                p.mul_(1.2)
    first, top = _rows_through_first_block(model), []
    model.net.get_submodule(last).register_forward_hook(lambda _m, a, _o: top.append(int(a[0].shape[0])))
    got = TE.cached_text_embeddings_by_tower(model, TEXTS, cache)
    assert first == [1, 1]  # the two one-row width probes; no text runs the lower blocks
    assert sum(top) == 1 + 6  # the probe and the 6 distinct texts through the last block
    with torch.no_grad():
        assert np.abs(got - model.encode_text(TEXTS).float().numpy()).max() <= 1e-5


@pytest.mark.parametrize("backend", ["openclip", "hf-clip", "composed"])
def test_lower_blocks_fingerprint_covers_the_blocks_below_the_last(model_specs, backend):
    model = _model(model_specs[backend])
    before = TE.lower_blocks_fingerprint(model, 1)
    prefixes = model.text_block_prefixes()
    above = [prefixes[-1], *model.text_final_norm_prefixes()]
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            if any(name.startswith(a + ".") for a in above) or model.part_of(name) != "text_encoder":
                p.add_(0.5)
    assert TE.lower_blocks_fingerprint(model, 1) == before
    with torch.no_grad():
        next(p for n, p in model.net.named_parameters() if n.startswith(prefixes[-2] + ".")).add_(1e-3)
    assert TE.lower_blocks_fingerprint(model, 1) != before


def _no_tokenising(model):
    def refuse(texts):
        raise AssertionError(f"tokenised {len(texts)} text(s)")

    model.tokenize = refuse


@pytest.mark.parametrize("backend", ["openclip", "composed"])
def test_a_complete_cache_is_read_without_tokenising(model_specs, backend, tmp_path):
    """The second model (same text tower, another folder) reads the cache keyed by the raw strings and
    the tokenizer's digest; nothing is tokenised and the rows are in the texts' order."""
    model = _model(model_specs[backend])
    save_model(model, tmp_path / "a")
    cache = tmp_path / "cache"
    first = TE.cached_text_embeddings_by_tower(mcip.load_model(str(tmp_path / "a")), TEXTS, cache)
    other = mcip.load_model(str(tmp_path / "a"))
    tokenizer_fingerprint(other)  # the digest tokenises its probe strings once, before the guard
    _no_tokenising(other)
    got = TE.cached_text_embeddings_by_tower(other, TEXTS, cache)
    np.testing.assert_array_equal(got, first)
    with torch.no_grad():  # the reference: every text alone, no cache
        alone = torch.cat([model.encode_text([t]).float() for t in TEXTS]).numpy()
    assert np.abs(got - alone).max() <= 1e-5


def test_a_damaged_length_order_is_rebuilt(model_specs, tmp_path):
    model = _model(model_specs["composed"])
    cache = tmp_path / "cache"
    first = TE.cached_text_embeddings_by_tower(model, TEXTS, cache)
    (order,) = list(cache.glob(f"*/{TE.ORDER_FILE}"))
    order.write_bytes(b"not an array")
    rows = _rows_through_first_block(model)
    again = TE.cached_text_embeddings_by_tower(model, TEXTS, cache)
    assert rows == []  # the rows were complete: only the order is rebuilt, by tokenising
    np.testing.assert_array_equal(again, first)
    np.save(order, np.zeros(6, dtype=np.int64))  # right shape, not a permutation
    assert TE._stored_order(order.parent, 6) is None
    np.testing.assert_array_equal(TE.cached_text_embeddings_by_tower(model, TEXTS, cache), first)
    assert sorted(TE._stored_order(order.parent, 6).tolist()) == list(range(6))


def test_another_tokenizer_with_the_same_weights_misses(model_specs, tmp_path):
    """Equal text weights, another context length: another key, and the embeddings of the new tokens."""
    model = _model(model_specs["composed"])
    cache = tmp_path / "cache"
    long_text = [" ".join(["word"] * 60), "a"]
    TE.cached_text_embeddings_by_tower(model, long_text, cache)
    short = _model(model_specs["composed"])
    short.tokenizer.model_max_length = 8  # the 60-word text is truncated at 8 tokens now
    got = TE.cached_text_embeddings_by_tower(short, long_text, cache)
    with torch.no_grad():
        reference = short.encode_text(long_text).float().numpy()
        before = model.encode_text(long_text).float().numpy()
    assert np.abs(got - reference).max() <= 1e-5
    assert np.abs(got[0] - before[0]).max() > 1e-3  # the truncation did change the embedding
