"""The image tower through torch.compile (mcip.models.compiled, `mcip encode --compile`): one batch shape
for a whole job, the same embeddings as the plain model, and a fallback when compiling fails."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import mcip
import mcip.models.compiled as compiled
from mcip.cli import main
from mcip.embed import encode_images
from tests.conftest import random_images


def _model(model_specs):
    torch.manual_seed(0)
    kwargs = dict(model_specs["composed"])
    model = mcip.load_model(kwargs.pop("spec"), **kwargs)
    model.eval()
    return model


def _folder(tmp_path, n: int = 7):
    """``n`` readable images of other sizes and colours, one file that is not an image, one grey PNG."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n - 1):
        pixels = rng.integers(0, 256, (30 + 3 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    Image.new("L", (33, 33), 128).save(folder / "grey.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return sorted(folder.iterdir())


class Recorder:
    """A stand-in for torch.compile: calls the function and records each batch size it sees."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.sizes, self.fail_at = [], fail_at

    def __call__(self, fn, dynamic=None):
        def run(pixels):
            self.sizes.append(len(pixels))
            if self.fail_at is not None and len(self.sizes) == self.fail_at:
                raise RuntimeError("inductor: no working C++ compiler\nlong trace")
            return fn(pixels)

        return run


def test_every_batch_reaches_the_compiled_function_at_one_size(model_specs, monkeypatch):
    model = _model(model_specs)
    recorder = Recorder()
    monkeypatch.setattr(compiled.torch, "compile", recorder)
    encode = compiled.image_encoder(model, compile=True, batch_size=4)
    pixels = random_images(10, 32)
    with torch.no_grad():
        out = torch.cat([encode(pixels[i : i + 4]) for i in range(0, 10, 4)])
        ref = model.encode_image(pixels)
    assert recorder.sizes == [4, 4, 4]  # the last batch of 2 was padded to 4, and its extra rows dropped
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert compiled.image_encoder(model, compile=False) == model.encode_image
    with pytest.raises(mcip.ConfigError, match="batch_size"):
        compiled.CompiledImageEncoder(model, 0)


def test_a_failing_compiler_falls_back_once_and_a_later_failure_is_raised(model_specs, monkeypatch, caplog):
    model = _model(model_specs)
    monkeypatch.setattr(compiled.torch, "compile", Recorder(fail_at=1))
    encode = compiled.image_encoder(model, compile=True, batch_size=4)
    pixels = random_images(6, 32)
    with caplog.at_level(logging.WARNING, logger="mcip.models.compiled"), torch.no_grad():
        first, second = encode(pixels[:3]), encode(pixels[3:])
        ref = model.encode_image(pixels)
    torch.testing.assert_close(torch.cat([first, second]), ref, atol=1e-6, rtol=0)
    assert caplog.text.count("encoding without it") == 1 and "no working C++ compiler" in caplog.text
    assert "long trace" not in caplog.text  # one line of the reason, not the whole trace
    monkeypatch.setattr(compiled.torch, "compile", Recorder(fail_at=2))
    encode = compiled.image_encoder(model, compile=True, batch_size=4)
    with torch.no_grad():
        encode(pixels[:4])
        with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):  # it worked once: not a compile problem
            encode(pixels[4:])


def test_a_platform_that_refuses_compile_falls_back_and_odd_inputs_run_uncompiled(
    model_specs, monkeypatch, caplog
):
    model = _model(model_specs)

    def refuse(fn, dynamic=None):
        raise RuntimeError("torch.compile is not supported on Python 3.99+")

    monkeypatch.setattr(compiled.torch, "compile", refuse)
    with caplog.at_level(logging.WARNING, logger="mcip.models.compiled"):
        encode = compiled.image_encoder(model, compile=True, batch_size=4)  # refused at construction
    assert encode.compiled is None and "not supported on Python 3.99+" in caplog.text
    pixels = random_images(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(encode(pixels), model.encode_image(pixels), atol=1e-6, rtol=0)
    recorder = Recorder()
    monkeypatch.setattr(compiled.torch, "compile", recorder)
    encode = compiled.image_encoder(model, compile=True, batch_size=4)
    images = [Image.new("RGB", (40, 30), (200, 10, 10)), Image.new("RGB", (30, 40), (10, 10, 200))]
    with torch.no_grad():
        torch.testing.assert_close(encode(images), model.encode_image(images), atol=1e-6, rtol=0)
        with pytest.raises(
            mcip.InputError, match="expects a"
        ):  # input errors are the caller's, not compile's
            encode(torch.zeros(2, 1, 32, 32))
    assert encode.compiled is not None  # PIL images ran uncompiled; the wrong shape did not disable it


def _has_cxx() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


@pytest.mark.slow
@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on the CPU needs a C++ compiler (g++ or clang++)")
def test_encode_compile_gives_the_embeddings_of_the_plain_model(model_specs, tmp_path, caplog):
    """`mcip encode --compile` and `mcip index build --compile` as the README shows them, with real
    torch.compile, on a messy folder."""
    caplog.set_level(logging.WARNING, logger="mcip.models.compiled")
    files = _folder(tmp_path)
    torch.manual_seed(0)
    spec = str(mcip.save_model(mcip.load_model(model_specs["openclip"]["spec"]), tmp_path / "model"))
    outs = {}
    for name, extra in (("plain", []), ("compiled", ["--compile"])):
        out = tmp_path / name
        args = ["encode", "--model", spec, "--images", str(files[0].parent), "--out", str(out)]
        assert (
            main([*args, "--batch-size", "3", "--workers", "0", "--quiet", "--neighbours", "0", *extra]) == 0
        )
        outs[name] = (np.load(out / "embeddings.npy"), json.loads((out / "summary.json").read_text()))
    (plain, s_plain), (fast, s_fast) = outs["plain"], outs["compiled"]
    assert fast.shape == plain.shape == (7, plain.shape[1]) and s_fast["skipped"] == s_plain["skipped"] == 1
    np.testing.assert_allclose(fast, plain, atol=1e-5, rtol=0)
    model = mcip.load_model(spec)
    encoded = encode_images(model, files, batch_size=3, progress=False, compile=True)
    np.testing.assert_allclose(encoded.embeddings, plain, atol=1e-5, rtol=0)
    index = tmp_path / "index"
    args = ["index", "build", "--model", spec, "--images", str(files[0].parent), "--out", str(index)]
    assert main([*args, "--batch-size", "4", "--workers", "0", "--quiet", "--compile"]) == 0
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["count"] == 7
    args = ["index", "rebuild", "--index", str(index), "--model", spec, "--out", str(tmp_path / "again")]
    assert main([*args, "--batch-size", "4", "--workers", "0", "--quiet", "--compile"]) == 0
    again = np.load(tmp_path / "again" / "embeddings.f16.npy")
    np.testing.assert_allclose(again, np.load(index / "embeddings.f16.npy"), atol=2e-3, rtol=0)
    assert "encoding without it" not in caplog.text  # compiled for real, no fallback
