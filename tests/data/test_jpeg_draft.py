"""JPEG draft decoding for eval transforms: reduced scale only where the resize still has the pixels it
needs, never for other formats or training transforms, and the same decoding for indexed and query
images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mcip.data.dataset import decode_image
from mcip.data.images import open_image
from mcip.models.transforms import ImageConfig, eval_transform, train_transform

CFG = ImageConfig(size=128, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _photo(path, size=(1280, 960), fmt="JPEG"):
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize(size, Image.BILINEAR).save(path, format=fmt)
    return path


@pytest.mark.parametrize(
    ("size", "draft", "expected"),
    [
        ((640, 480), 144, (320, 240)),  # min(640 // 144, 480 // 144) = 3: scale 1/2
        ((1280, 960), 288, (640, 480)),  # the lab's 128 px model: 2 x 144
        ((4000, 3000), 252, (500, 375)),  # a phone photo for a 224 px model: 1/8
        ((640, 480), 504, (640, 480)),  # 480 // 504 = 0: full size
        ((640, 480), None, (640, 480)),
    ],
)
def test_draft_keeps_both_sides_at_least_the_resize(tmp_path, size, draft, expected):
    img = open_image(_photo(tmp_path / "p.jpg", size), draft=draft)
    assert img.size == expected and min(img.size) >= min(draft or 0, *size)
    assert img.mode == "RGB"


def test_draft_leaves_other_formats_alone(tmp_path):
    assert open_image(_photo(tmp_path / "p.png", fmt="PNG"), draft=144).size == (1280, 960)


def test_eval_decoding_drafts_only_when_asked_and_stays_close_to_full_decoding(tmp_path, monkeypatch):
    """Full decoding by default; with MCIP_JPEG_DRAFT=1 the eval transform carries its draft size, the
    drafted tensor is close to full decoding + resize, the cache key changes, and training transforms
    decode in full."""
    from mcip.data.images import eval_decoding

    monkeypatch.delenv("MCIP_JPEG_DRAFT", raising=False)
    assert eval_transform(CFG).draft_size is None and eval_decoding() == "full"
    monkeypatch.setenv("MCIP_JPEG_DRAFT", "1")
    assert eval_decoding() == "jpeg-draft-2x"
    path = _photo(tmp_path / "p.jpg")
    transform = eval_transform(CFG)
    assert transform.draft_size == 2 * round(1.125 * 128) and not hasattr(train_transform(CFG), "draft_size")
    drafted = decode_image(path, transform, "p")
    full = transform(open_image(path))
    assert drafted.shape == full.shape == (3, 128, 128)
    cos = torch.nn.functional.cosine_similarity(drafted.flatten(), full.flatten(), dim=0)
    assert float(cos) > 0.99 and not torch.equal(drafted, full)
