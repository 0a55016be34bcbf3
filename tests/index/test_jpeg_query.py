"""Query images decode as the indexed ones did (JPEG draft scaling on both sides)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mcip.data.images import open_image


def test_a_jpeg_query_decodes_as_its_indexed_copy(model_dir, tmp_path, monkeypatch):
    """An index of JPEG photos searched with one of its files: the stored embedding and the query's are
    the same (score 1 up to float16 storage), because both decode at the same draft scale."""
    from mcip.index import SearchIndex, build_index

    monkeypatch.setenv("MCIP_JPEG_DRAFT", "1")  # draft decoding on: build and queries alike

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((640, 480), Image.BILINEAR).save(folder / f"{i}.jpg", quality=90)
    build_index(model_dir, folder, tmp_path / "index", batch_size=2, progress=False)
    with SearchIndex.open(tmp_path / "index") as index:
        assert index.image_draft_size() is not None
        hit = index.search(image=folder / "2.jpg", k=1)[0]
        assert hit.id == "2.jpg" and hit.score == pytest.approx(1.0, abs=2e-3)
        query = index.encode_image((folder / "2.jpg").read_bytes())
        model, draft = index.model, index.image_draft_size()
        with torch.no_grad():
            drafted, full = (
                model.encode_image(model.eval_transform(open_image(folder / "2.jpg", draft=d))[None])[
                    0
                ].numpy()
                for d in (draft, None)
            )
        assert not np.array_equal(drafted, full)  # the two decodings differ ...
        np.testing.assert_allclose(query, drafted, atol=1e-6)  # ... and the query takes the indexed one
        np.testing.assert_allclose(index.embedding("2.jpg"), drafted, atol=2e-3)
