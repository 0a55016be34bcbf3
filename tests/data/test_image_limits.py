"""Image limits at the shared decode (``open_image``) and resize (``CheckResize``): thin images,
decompression bombs and formats outside the allow-list are refused before their pixels are decoded, and
every data path skips them with the reason."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from PIL import Image

from mcip.data import ImageDataset, ImageRecord, collate_images, open_image
from mcip.data.dataset import decode_image
from mcip.data.limits import (
    ImageFormatRefused,
    ImageLimits,
    ImageRefused,
    check_resize,
    default_image_limits,
)
from mcip.errors import ConfigError, InputError
from mcip.models.transforms import CheckResize, ImageConfig, eval_transform, train_transform
from tests.data.conftest import to_pixels, write_png
from tests.data.image_samples import BOMBS, DISALLOWED_FORMATS, THIN, blank_png, saved_as

CFG = ImageConfig(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("size", THIN.values(), ids=THIN.keys())
def test_thin_images_are_refused_from_the_header(size):
    with pytest.raises(ImageRefused, match=r"aspect ratio of [\d,]+:1, over the limit of 50:1"):
        open_image(io.BytesIO(blank_png(*size)))


def test_the_aspect_limit_is_inclusive_and_covers_both_orientations():
    assert open_image(io.BytesIO(blank_png(50, 1))).size == (50, 1)
    assert open_image(io.BytesIO(blank_png(1, 50))).size == (1, 50)
    with pytest.raises(ImageRefused):
        open_image(io.BytesIO(blank_png(1, 51)))


@pytest.mark.parametrize("size", BOMBS.values(), ids=BOMBS.keys())
def test_decompression_bombs_are_refused_without_a_warning(size):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape
        with pytest.raises(ImageRefused, match="decompression bomb"):
            open_image(io.BytesIO(blank_png(*size)))


def test_pixel_limit_is_checked_before_decoding():
    limits = ImageLimits(max_pixels=10_000)
    assert open_image(io.BytesIO(blank_png(100, 100)), limits).size == (100, 100)
    with pytest.raises(ImageRefused, match=r"101 x 100 = 10,100 px, over the limit of 10,000 px"):
        open_image(io.BytesIO(blank_png(101, 100)), limits)


@pytest.mark.parametrize("fmt", DISALLOWED_FORMATS)
def test_formats_outside_the_allow_list_are_refused(fmt):
    with pytest.raises(ImageFormatRefused) as caught:
        open_image(io.BytesIO(saved_as(fmt)))
    assert "JPEG, PNG, WEBP, GIF, BMP or TIFF" in str(caught.value)
    assert isinstance(caught.value, InputError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"])
def test_allowed_formats_decode(fmt, tmp_path):
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(saved_as(fmt))
    assert open_image(path).size == (12, 8)  # a camera's MPO file is a JPEG to Pillow


def test_a_format_can_be_allowed():
    assert open_image(io.BytesIO(saved_as("PPM")), ImageLimits(formats=("PPM",))).size == (12, 8)


def test_garbage_is_still_an_unreadable_file():
    with pytest.raises(OSError):
        open_image(io.BytesIO(b"%PDF-1.4 not an image"))


def test_resize_limit_refuses_before_the_resize():
    img = Image.new("RGB", (2, 100))  # 18 px shorter side -> 18 x 900 = 16,200 px
    check_resize(img.size, 18, ImageLimits(max_resized_pixels=16_200))
    with pytest.raises(ImageRefused, match="16,200 px, over the limit of 16,199"):
        CheckResize(18, ImageLimits(max_resized_pixels=16_199))(img)
    with pytest.raises(ImageRefused):
        CheckResize(18, ImageLimits(max_resized_pixels=16_199))(torch.zeros(3, 100, 2))


def test_transforms_refuse_what_open_image_did_not_check(monkeypatch):
    """A PIL image handed straight to a transform (SearchIndex.encode_image(PIL)) is still bounded."""
    monkeypatch.setenv("MCIP_MAX_RESIZED_PIXELS", "1000")
    img = Image.new("RGB", (4, 400))
    for tf in (eval_transform(CFG), train_transform(CFG)):
        with pytest.raises(ImageRefused, match="max_resized_pixels"):
            tf(img)


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("MCIP_MAX_IMAGE_ASPECT", "100000")
    monkeypatch.setenv("MCIP_MAX_IMAGE_PIXELS", "1_000_000")
    assert default_image_limits() == ImageLimits(max_aspect_ratio=100_000, max_pixels=1_000_000)
    assert open_image(io.BytesIO(blank_png(1, 20_000))).size == (1, 20_000)
    monkeypatch.setenv("MCIP_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="MCIP_MAX_IMAGE_PIXELS must be a number"):
        default_image_limits()
    monkeypatch.setenv("MCIP_MAX_IMAGE_PIXELS", "0")
    with pytest.raises(ConfigError, match=r"max_pixels must be a positive integer.*MCIP_MAX_IMAGE_PIXELS"):
        default_image_limits()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_aspect_ratio": 0.5}, "at least 1"),
        ({"max_aspect_ratio": float("nan")}, "at least 1"),
        ({"max_pixels": 0}, "max_pixels must be a positive integer"),
        ({"max_resized_pixels": 1.5}, "max_resized_pixels must be a positive integer"),
        ({"formats": ("PNG", "HEIC")}, "unknown: ['HEIC']"),
        ({"formats": ()}, "none given"),
    ],
)
def test_bad_limits_fail_early(kwargs, message):
    with pytest.raises(ConfigError) as caught:
        ImageLimits(**kwargs)
    assert message in str(caught.value)


def test_thin_training_images_are_skipped_with_the_reason(tmp_path):
    thin = tmp_path / "thin.png"
    thin.write_bytes(blank_png(1, 20_000))
    eps = tmp_path / "drawing.png"  # the name says PNG, the bytes are EPS
    eps.write_bytes(saved_as("EPS"))
    good = write_png(tmp_path / "good.png")
    records = [ImageRecord(p.stem, p, "a") for p in (good, thin, eps)]
    dataset = ImageDataset(records, train_transform(CFG))
    batch = collate_images([dataset[i] for i in range(3)])
    assert batch["index"].tolist() == [0] and batch["pixels"].shape == (1, 3, 16, 16)
    reasons = dict(batch["skipped"])
    assert reasons[1].startswith(f"{thin}: ImageRefused: ") and "aspect ratio" in reasons[1]
    assert reasons[2].startswith(f"{eps}: ImageFormatRefused: ") and "EPS" in reasons[2]


def test_decode_image_reports_the_reason_and_never_raises(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(blank_png(*BOMBS["warned"]))
    assert "decompression bomb" in decode_image(path, to_pixels, str(path))
