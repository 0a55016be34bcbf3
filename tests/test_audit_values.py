"""Value checks the README's claims rest on (issue 14's audit): evaluation end to end, caption retrieval,
and the frozen-tower caches, each against a direct computation on the same tiny model (not ranges)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import mcip
from mcip.data.records import ImageRecord
from mcip.eval.benchmarks import resolve_benchmarks
from mcip.eval.metrics import retrieval_average_precision
from mcip.eval.runner import evaluate_models

COLOURS = [(200, 20, 20), (20, 180, 40), (20, 20, 200), (220, 200, 30)]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for c, rgb in enumerate(COLOURS):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(3):
            img = Image.new("RGB", (24, 24), rgb)
            img.paste((255 - 60 * i, 255, 255), (2 * i, 2 * i, 8 + 3 * i, 10 + 2 * i))
            img.save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture
def model(tiny_openclip):
    torch.manual_seed(0)
    return mcip.load_model(f"openclip:{tiny_openclip}")


def _encode(model, paths) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_image([Image.open(p).convert("RGB") for p in paths]).float()


def test_evaluate_models_equals_the_metric_on_the_models_embeddings(folder, model, tmp_path):
    spec = mcip.save_model(model, tmp_path / "m")
    (report,) = evaluate_models([str(spec)], resolve_benchmarks(f"folder_i2i:path={folder}"), tmp_path)
    got = report.results["folder_i2i"].metrics["map"]
    paths = sorted(folder.glob("class*/*.png"))
    labels = torch.tensor([int(p.parent.name[-1]) for p in paths])
    emb = _encode(mcip.load_model(spec), paths)
    direct = 100 * float(retrieval_average_precision(emb, labels).nanmean())
    stored = 100 * float(retrieval_average_precision(emb.half().float(), labels).nanmean())  # fp16 cache
    assert got == pytest.approx(stored, abs=1e-6) or got == pytest.approx(direct, abs=1e-6)
    assert got == pytest.approx(direct, abs=1.0)


def test_retrieve_captions_returns_the_true_top_k_with_their_cosines(folder, model, tmp_path):
    from mcip.captions.retrieve import retrieve_captions

    pool = [f"a {w} square" for w in ("red", "green", "blue", "yellow", "white", "black", "tiny", "big")]
    (tmp_path / "pool.txt").write_text("\n".join(pool) + "\n")
    paths = sorted(folder.glob("class*/0.png"))
    records = [ImageRecord(p.parent.name, p, p.parent.name) for p in paths]
    with torch.no_grad():
        sims = (_encode(model, paths) @ model.encode_text(pool).float().T).numpy()
    values = np.sort(sims.ravel())
    gaps = np.diff(values)
    i = int(np.argmax(gaps[len(gaps) // 4 : 3 * len(gaps) // 4])) + len(gaps) // 4
    min_sim = float(values[i] + values[i + 1]) / 2  # a real threshold inside the distribution, off any tie
    out = tmp_path / "caps.jsonl"
    retrieve_captions(model, records, tmp_path / "pool.txt", out, top_k=3, min_sim=min_sim,
                      cache_dir=tmp_path / "cache", progress=False)  # fmt: skip
    rows = {json.loads(line)["id"]: json.loads(line)["captions"] for line in out.read_text().splitlines()}
    for k, r in enumerate(records):
        order = [j for j in np.argsort(-sims[k], kind="stable") if sims[k, j] >= min_sim][:3]
        got = rows[r.id]
        assert [c["text"] for c in got] == [pool[j] for j in order]
        for c, j in zip(got, order, strict=True):
            assert c["score"] == pytest.approx(float(sims[k, j]), abs=2e-3)  # float16 cache


def test_mcip_caption_cache_and_rea_image_cache_equal_the_frozen_towers(folder, model, tmp_path):
    from mcip.stages.features import caption_embeddings, image_embeddings

    paths = sorted(folder.glob("class*/*.png"))
    records = [ImageRecord(str(p), p, p.parent.name, (f"a {p.parent.name}", "a square")) for p in paths]
    captions = caption_embeddings(model, records, tmp_path / "cache")
    images = image_embeddings(model, records, tmp_path / "cache")
    with torch.no_grad():
        for i, r in enumerate(records):
            rows, owner = captions.rows_for([i])
            direct = model.encode_text(list(r.captions)).float()
            assert torch.allclose(torch.as_tensor(np.asarray(rows, dtype=np.float32)), direct, atol=2e-3)
            assert owner.tolist() == [0, 0]
        direct = _encode(model, paths).numpy()
    assert np.allclose(np.asarray(images, dtype=np.float32), direct, atol=2e-3)
    again = image_embeddings(model, records, tmp_path / "cache")  # read back from the cache, same rows
    assert np.array_equal(np.asarray(again), np.asarray(images))


def test_shared_captions_are_encoded_once_and_read_back_per_caption(folder, model, tmp_path, monkeypatch):
    """Each distinct caption reaches the text tower once (first-seen order); every record still gets its
    own rows, equal to encoding its captions directly (the same reference as above)."""
    import mcip.stages.features as features
    from mcip.stages.features import caption_embeddings, frozen_text_features

    seen: list[list[str]] = []
    real_embed, real_feats = features.cached_text_embeddings, features.cached_text_features
    monkeypatch.setattr(
        features, "cached_text_embeddings", lambda m, t, *a: seen.append(list(t)) or real_embed(m, t, *a)
    )
    monkeypatch.setattr(
        features, "cached_text_features", lambda m, t, *a: seen.append(list(t)) or real_feats(m, t, *a)
    )
    paths = sorted(folder.glob("class*/*.png"))[:4]
    records = [ImageRecord(str(p), p, p.parent.name, (f"a {p.parent.name}", "a square")) for p in paths]
    labels = [p.parent.name for p in paths]
    distinct = list(dict.fromkeys(c for name in labels for c in (f"a {name}", "a square")))
    captions = caption_embeddings(model, records, tmp_path / "cache")
    feats = frozen_text_features(model, records, tmp_path / "cache")
    assert seen == [distinct, distinct]
    assert feats.shape[0] == 2 * len(records) and len(captions) == len(records)
    with torch.no_grad():
        for i, r in enumerate(records):
            rows, _ = captions.rows_for([i])
            assert torch.allclose(rows, model.encode_text(list(r.captions)).float(), atol=2e-3)
        tokens = model.tokenize([c for r in records for c in r.captions])
        direct = model.text_features(tokens).float().numpy()
    assert np.allclose(np.asarray(feats, dtype=np.float32), direct, atol=1e-4)
    assert np.allclose(feats[np.array([3, 1])], direct[[3, 1]], atol=1e-4)
