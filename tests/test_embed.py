"""encode helpers: the leave-one-out 1-NN accuracy against a per-query loop."""

from __future__ import annotations

import numpy as np

from mcip.embed import leave_one_out_nn_accuracy


def test_leave_one_out_matches_naive_loop():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = [str(i % 3) for i in range(40)]
    hits = 0
    for i in range(40):
        best, best_j = -np.inf, -1
        for j in range(40):
            if j != i and float(emb[i] @ emb[j]) > best:
                best, best_j = float(emb[i] @ emb[j]), j
        hits += labels[best_j] == labels[i]
    assert leave_one_out_nn_accuracy(emb, labels) == hits / 40


def test_single_label_gives_none():
    assert leave_one_out_nn_accuracy(np.eye(3, dtype=np.float32), ["a", "a", "a"]) is None


def test_nearest_neighbours_match_naive_loop():
    from mcip.embed import nearest_neighbours

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(12, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    indices, sims = nearest_neighbours(emb, 3, rows=5)
    assert indices.shape == sims.shape == (5, 3)
    for i in range(5):
        others = sorted((j for j in range(12) if j != i), key=lambda j: -float(emb[i] @ emb[j]))[:3]
        assert indices[i].tolist() == others
        np.testing.assert_allclose(sims[i], [emb[i] @ emb[j] for j in others], rtol=1e-6)


def test_nearest_neighbours_rank_self_last():
    from mcip.embed import nearest_neighbours

    indices, sims = nearest_neighbours(np.eye(2, dtype=np.float32), 5)
    assert indices.tolist() == [[1, 0], [0, 1]] and np.isneginf(sims[:, 1]).all()


def test_encoding_with_decoding_workers_equals_encoding_here(tiny_openclip, tmp_path):
    """encode_images(num_workers=2): the same rows, embeddings and skipped files as decoding in this
    process, with a corrupt file and an empty one among the images; and the same as encoding each image
    alone (batching changes nothing)."""
    import torch

    import mcip
    from mcip.embed import encode_images
    from tests.index.helpers import write_pngs

    paths = write_pngs(tmp_path, [f"{i:02d}.png" for i in range(11)])
    (tmp_path / "03.png").write_bytes(b"not a png")
    (tmp_path / "07.png").write_bytes(b"")
    model = mcip.load_model(f"openclip:{tiny_openclip}")
    here = encode_images(model, paths, batch_size=4, progress=False)
    workers = encode_images(model, paths, batch_size=4, progress=False, num_workers=2)
    assert here.rows == workers.rows == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert workers.paths == [paths[r] for r in workers.rows]
    assert set(workers.skipped) == set(here.skipped) == {str(paths[3]), str(paths[7])}
    np.testing.assert_array_equal(workers.embeddings, here.embeddings)
    with torch.no_grad():
        alone = np.stack([encode_images(model, [p], progress=False).embeddings[0] for p in workers.paths])
    np.testing.assert_allclose(workers.embeddings, alone, atol=1e-5)


def test_image_embeddings_come_from_stored_encoder_features_without_decoding(
    tiny_openclip, tmp_path, monkeypatch
):
    """When an alignment stage has cached the image encoder's pooled features of the same files,
    cached_image_embeddings only runs the projector: no image is decoded, and the embeddings equal the
    model's own encode_image on the decoded images (unreadable files stay NaN rows)."""
    import torch

    import mcip
    from mcip import embed
    from mcip.data.dataset import decode_image
    from tests.index.helpers import write_pngs

    paths = write_pngs(tmp_path, [f"{i:02d}.png" for i in range(7)])
    (tmp_path / "04.png").write_bytes(b"not a png")
    model = mcip.load_model(f"openclip:{tiny_openclip}")
    embed.cached_image_features(model, paths, tmp_path / "cache", batch_size=3)

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded although its encoder features were stored")

    monkeypatch.setattr(embed, "encode_images", no_decoding)
    got = np.asarray(embed.cached_image_embeddings(model, paths, tmp_path / "cache", 3), np.float32)
    assert np.isnan(got[4]).all() and not np.isnan(np.delete(got, 4, axis=0)).any()
    readable = [p for i, p in enumerate(paths) if i != 4]
    with torch.no_grad():
        pixels = torch.stack([decode_image(p, model.eval_transform, str(p)) for p in readable])
        reference = model.encode_image(pixels).numpy()
    np.testing.assert_allclose(np.delete(got, 4, axis=0), reference, atol=2e-3)  # stored as float16


def test_image_embeddings_of_other_files_are_encoded(tiny_openclip, tmp_path):
    """Stored encoder features of another file list are not used (the key is the file list)."""
    import mcip
    from mcip import embed
    from tests.index.helpers import write_pngs

    paths = write_pngs(tmp_path, [f"{i:02d}.png" for i in range(4)])
    model = mcip.load_model(f"openclip:{tiny_openclip}")
    embed.cached_image_features(model, paths[:3], tmp_path / "cache")
    from mcip.data.cache import FeatureCache

    assert embed._stored_image_features(model, paths, FeatureCache(tmp_path / "cache")) is None
    assert embed._stored_image_features(model, paths[:3], FeatureCache(tmp_path / "cache")) is not None
