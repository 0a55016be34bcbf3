"""The image encoder in two halves (mcip.models.image_split): stem then the rest gives timm's own forward
of the whole encoder, bit for bit; the stem fingerprint follows the stem and nothing else."""

from __future__ import annotations

import pytest
import torch

import mcip
from mcip.errors import ConfigError, UnsupportedError
from mcip.models import image_split
from mcip.models.fingerprint import image_stem_fingerprint
from tests.conftest import random_images


def _composed(model_specs, image: str = "test_efficientnet", seed: int = 0):
    torch.manual_seed(seed)
    kwargs = dict(model_specs["composed"])
    spec = kwargs.pop("spec").replace("test_efficientnet", image)
    return mcip.load_model(spec, **kwargs).eval()


@pytest.mark.parametrize("image", ["test_efficientnet", "mobilenetv3_small_050"])
def test_stem_then_rest_is_the_whole_encoder(image, model_specs):
    model = _composed(model_specs, image)
    pixels = random_images(3, model.image_size)
    with torch.no_grad():
        whole = model.image_encoder(pixels)  # the reference: timm's forward of the whole encoder
        blocks = len(model.image_encoder.blocks)
        # the stem, one group per block (MobileNetV3: and its head conv in one more)
        assert len(model.image_groups()) == blocks + (2 if image.startswith("mobilenet") else 1)
        assert image_split.supports(model, blocks) and not image_split.supports(model, blocks + 1)
        for n in range(1, blocks + 1):
            x = image_split.stem(model, pixels, n)
            assert torch.equal(image_split.features_from_stem(model, x, n), whole), n


def test_stem_is_the_frozen_groups(model_specs):
    """The stem after N groups is what the first N groups of image_groups() compute: its modules own
    exactly those parameters."""
    model = _composed(model_specs)
    groups = model.image_groups()
    for n in range(1, len(model.image_encoder.blocks) + 1):
        owned = {
            f"{name}.{p}"
            for name, module in image_split.stem_modules(model, n)
            for p, _ in module.named_parameters()
        }
        assert owned == {name for group in groups[:n] for name in group}


def test_unsupported_encoders_say_so(model_specs):
    model = _composed(model_specs)
    assert not image_split.supports(model, 0)
    assert not image_split.supports(model, len(model.image_groups()))  # nothing left above the stem
    with pytest.raises(ConfigError, match="groups must be in 1"):
        image_split.stem(model, random_images(1, model.image_size), 0)
    kwargs = dict(model_specs["openclip"])
    vit = mcip.load_model(kwargs.pop("spec"), **kwargs)
    assert not image_split.supports(vit, 1)
    with pytest.raises(UnsupportedError, match="whole encoder runs instead"):
        image_split.stem(vit, random_images(1, vit.image_size), 1)


def test_stem_fingerprint_follows_the_stem_only(model_specs):
    model = _composed(model_specs)
    before = image_stem_fingerprint(model, 2)
    assert image_stem_fingerprint(_composed(model_specs), 2) == before  # same weights, same stem
    assert image_stem_fingerprint(model, 3) != before  # another boundary
    with torch.no_grad():
        next(model.image_encoder.blocks[1].parameters()).add_(1.0)  # above the stem at 2 groups
    assert image_stem_fingerprint(model, 2) == before
    model.image_encoder.bn1.running_mean.add_(0.5)  # a buffer of the stem
    assert image_stem_fingerprint(model, 2) != before
    other = _composed(model_specs, seed=1)  # other weights
    assert image_stem_fingerprint(other, 2) != image_stem_fingerprint(_composed(model_specs), 2)
