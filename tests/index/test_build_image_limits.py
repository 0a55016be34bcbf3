"""An index build (and ``mcip encode``'s encoder) skips images over the limits with the reason, and the
rest of the collection is indexed."""

from __future__ import annotations

from mcip.embed import encode_images
from mcip.index import build_index, index_info
from tests.data.image_samples import blank_png, saved_as
from tests.index.helpers import write_pngs


def _collection(root):
    write_pngs(root, ["a/0.png", "a/1.png", "b/0.png"])
    thin = root / "a" / "thin.png"
    thin.write_bytes(blank_png(1, 20_000))
    eps = root / "b" / "drawing.png"  # a .png name over EPS bytes
    eps.write_bytes(saved_as("EPS"))
    return thin, eps


def test_index_build_skips_images_over_the_limits_with_the_reason(model_dir, tmp_path):
    thin, eps = (str(p.resolve()) for p in _collection(tmp_path / "photos"))
    summary = build_index(model_dir, tmp_path / "photos", tmp_path / "index", progress=False)
    assert summary["count"] == 3 and summary["skipped_unreadable"] == 2
    reasons = index_info(tmp_path / "index")["skipped_files"]
    assert "ImageRefused" in reasons[thin] and "aspect ratio of 20,000:1" in reasons[thin]
    assert "ImageFormatRefused" in reasons[eps] and "JPEG, PNG, WEBP, GIF, BMP or TIFF" in reasons[eps]


def test_encode_images_skips_a_thin_image_with_the_reason(model, tmp_path):
    thin, eps = _collection(tmp_path)
    result = encode_images(model, sorted(tmp_path.rglob("*.png")), progress=False)
    assert len(result.paths) == 3 and set(result.skipped) == {str(thin), str(eps)}
    assert "aspect ratio" in result.skipped[str(thin)]
