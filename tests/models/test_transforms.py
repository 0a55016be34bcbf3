"""Image transforms: transparency onto white, sizes, the 1.125 resize ratio."""

from __future__ import annotations

import torch
from PIL import Image

from mcip.models.transforms import ImageConfig, eval_transform, train_transform

CFG = ImageConfig(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # fully transparent black
    x = eval_transform(CFG)(img)
    torch.testing.assert_close(x, torch.ones(3, 16, 16))  # white after (1 - 0.5) / 0.5


def test_eval_resizes_then_centre_crops():
    img = Image.new("RGB", (40, 20), (10, 200, 30))
    tf = eval_transform(CFG)
    assert [type(t).__name__ for t in tf.transforms][2:4] == ["Resize", "CenterCrop"]
    assert tf.transforms[2].size == 18  # round(1.125 * 16)
    assert tuple(tf(img).shape) == (3, 16, 16)


def test_train_transform_is_random_but_shaped():
    img = Image.new("RGB", (30, 30), (10, 200, 30))
    tf = train_transform(CFG)
    names = [type(t).__name__ for t in tf.transforms]
    assert {"RandomCrop", "RandomHorizontalFlip", "ColorJitter"} <= set(names)
    assert tuple(tf(img).shape) == (3, 16, 16)
