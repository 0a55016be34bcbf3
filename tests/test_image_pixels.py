"""An evaluation's images decoded once (mcip.image_pixels): the cached pixels are bitwise what the eval
transform gives, a second model reads them without decoding and gets its own encoder's embeddings,
unreadable files stay NaN rows, and a list over the size limit is decoded as before."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import mcip
from mcip.data.dataset import decode_image
from mcip.embed import cached_image_embeddings, encode_images
from mcip.image_pixels import cached_eval_pixels


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Odd images: RGBA with transparency, a palette PNG, a grey JPEG, a wide RGB, a tall one, and a
    file that is not an image."""
    root = tmp_path_factory.mktemp("pixels")
    rng = np.random.default_rng(0)
    out = []
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).convert("P").save(root / "b.png")
    Image.fromarray(rng.integers(0, 256, (64, 48), dtype=np.uint8), "L").save(root / "c.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (20, 90, 3), dtype=np.uint8)).save(root / "d.png")
    (root / "e.png").write_bytes(b"not a png")
    Image.fromarray(rng.integers(0, 256, (77, 33, 3), dtype=np.uint8)).save(root / "f.webp")
    out = [root / n for n in ("a.png", "b.png", "c.jpg", "d.png", "e.png", "f.webp")]
    return out


def _model(model_specs, backend="composed", seed=0):
    torch.manual_seed(seed)
    kwargs = dict(model_specs[backend])
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


@pytest.mark.parametrize("backend", ["composed", "openclip"])
def test_cached_pixels_are_the_eval_transform_bit_for_bit(model_specs, files, tmp_path, backend):
    model = _model(model_specs, backend)
    pixels = cached_eval_pixels(model, files, tmp_path / "cache", batch_size=4)
    assert pixels.readable(0, len(files)).tolist() == [True, True, True, True, False, True]
    expected = torch.stack(
        [decode_image(p, model.eval_transform, str(p)) for p in files if p.name != "e.png"]
    )
    got = pixels.tensor(model, 0, len(files))
    assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_a_second_model_reads_the_pixels_without_decoding(model_specs, files, tmp_path, monkeypatch):
    """The first evaluation decodes each file once; a model with another image tower (same geometry)
    decodes nothing and gets exactly the embeddings of decoding again (``encode_images``)."""
    first = _model(model_specs)
    second = copy.deepcopy(first)
    with torch.no_grad():
        for name, p in second.net.named_parameters():
            if second.part_of(name) == "image_encoder":
                p.mul_(1.05)
    cache = tmp_path / "cache"
    import mcip.image_pixels as P

    decodes = []
    real = P.decode_image
    monkeypatch.setattr(P, "decode_image", lambda *a: decodes.append(a[0]) or real(*a))
    a = cached_image_embeddings(first, files, cache, batch_size=4, share_pixels=True)
    assert decodes == files  # each file once

    def refuse(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(P, "decode_image", refuse)
    monkeypatch.setattr("mcip.embed.decode_image", refuse)
    b = np.asarray(cached_image_embeddings(second, files, cache, batch_size=4, share_pixels=True), np.float32)
    monkeypatch.undo()
    for model, got in ((first, np.asarray(a, np.float32)), (second, b)):
        encoded = encode_images(model, files, batch_size=4, progress=False)
        assert [files[r].name for r in encoded.rows] == ["a.png", "b.png", "c.jpg", "d.png", "f.webp"]
        assert np.isnan(got[4]).all()
        expected = encoded.embeddings.astype(np.float16).astype(np.float32)  # the cache stores float16
        np.testing.assert_array_equal(got[encoded.rows], expected)
    assert np.abs(a[0].astype(np.float32) - b[0]).max() > 1e-3  # the towers do differ


def test_another_geometry_or_a_list_over_the_limit_is_decoded_again(
    model_specs, files, tmp_path, monkeypatch
):
    model = _model(model_specs)
    cache = tmp_path / "cache"
    cached_eval_pixels(model, files, cache)
    kwargs = dict(model_specs["composed"]) | {"image_size": 48}
    bigger = mcip.load_model(kwargs.pop("spec"), **kwargs)
    got = cached_eval_pixels(bigger, files, cache)
    assert got.size == 48 and len(list(cache.iterdir())) == 2  # its own cache, its own crops
    width = 1 + 32 * 32 * 3
    monkeypatch.setenv("MCIP_STEM_CACHE_BYTES", str(len(files) * width - 1))
    assert cached_eval_pixels(model, files, tmp_path / "other") is None
    monkeypatch.setenv("MCIP_STEM_CACHE_BYTES", str(len(files) * width))
    assert cached_eval_pixels(model, files, tmp_path / "other") is not None
    monkeypatch.setenv("MCIP_STEM_CACHE_BYTES", "0")
    assert cached_eval_pixels(model, files, tmp_path / "third") is None
