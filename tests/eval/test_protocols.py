"""Protocols: tiny synthetic embeddings in, flat {metric: percent} out."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mcip.errors import InputError
from mcip.eval import protocols as P
from mcip.eval.benchmarks.base import Images, RetrievalSet
from mcip.eval.metrics import retrieval_average_precision


def unit(x) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)


def retrieval_set(metric, include_self, subsets=(), ks=(1, 2, 4, 8)):
    return RetrievalSet(Images(paths=(Path("x.jpg"),)), include_self, metric, ks, subsets)


def test_retrieval_map_with_subsets():
    g = torch.Generator().manual_seed(0)
    emb = unit(torch.randn(12, 4, generator=g))
    labels = np.repeat(np.arange(4), 3)
    out = P.evaluate_retrieval(emb, labels, retrieval_set("map", True, (("a", 0, 6), ("b", 6, 12))))
    ap = retrieval_average_precision(emb, torch.as_tensor(labels))
    assert out == pytest.approx(
        {
            "map": 100 * ap.mean().item(),
            "map/a": 100 * ap[:6].mean().item(),
            "map/b": 100 * ap[6:].mean().item(),
        }
    )
    perfect = unit(np.repeat(np.eye(4), 3, axis=0))
    assert P.evaluate_retrieval(perfect, labels, retrieval_set("map", True)) == {"map": 100.0}


def test_retrieval_map_excluding_self_skips_singletons():
    emb = unit([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    out = P.evaluate_retrieval(emb, np.array([0, 0, 1]), retrieval_set("map", False))
    assert out == {"map": 100.0}  # item 2 has no other relevant item: left out of the mean


def test_retrieval_recall():
    emb = unit([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 1, 0, 1])
    out = P.evaluate_retrieval(emb, labels, retrieval_set("recall", False, ks=(1, 2)))
    # rankings of the others: 0 -> 1, 3, 2; 1 -> 0, 3, 2; 2 -> 3, 1, 0; 3 -> 2, 1, 0
    # first same-label item at rank 3, 2, 3, 2
    assert out == {"recall@1": 0.0, "recall@2": 50.0}
    assert P.recall_scores(emb, labels, ks=(3,)) == {"recall@3": 100.0}


def test_bad_subset():
    with pytest.raises(InputError, match="outside"):
        P.map_scores(unit(torch.eye(3)), [0, 1, 2], subsets=(("x", 0, 5),))


def test_knn():
    index = unit([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    queries = unit([[1.0, 0.05], [0.05, 1.0]])
    out = P.evaluate_knn(index, [0, 0, 1, 1], queries, [0, 0], num_classes=3, k=3)
    assert out == {"top1": 50.0, "top5": 100.0}


def test_zeroshot():
    classifier = unit(torch.eye(3))
    images = unit([[1.0, 0.2, 0.0], [0.0, 0.1, 1.0], [0.5, 0.4, 0.0]])
    out = P.evaluate_zeroshot(images, torch.tensor([0, 2, 1]), classifier)
    assert out == {"top1": pytest.approx(200 / 3), "top5": 100.0}


def test_t2i_both_directions():
    images = unit([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    texts = unit([[0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.8, 0.6]])
    owner = torch.tensor([0, 1, 1, 2])
    out = P.evaluate_t2i(images, texts, owner, ks=(1, 2))
    # text -> image: t0 -> 0 (hit); t1 -> 1; t2 -> 1; t3 -> 2 -> recall@1 = 100
    # image -> text: i0 -> t0 (hit); i1 -> t1 (hit); i2 -> t3 (hit)
    assert out == {"recall@1": 100.0, "recall@2": 100.0, "i2t_recall@1": 100.0, "i2t_recall@2": 100.0}
    swapped = P.evaluate_t2i(images, texts, torch.tensor([1, 0, 0, 2]), ks=(1,))
    assert swapped == {"recall@1": 25.0, "i2t_recall@1": pytest.approx(100 / 3)}


class HashTextModel:
    """A deterministic fake text tower: each string -> a normalised vector seeded by its hash."""

    dim = 16

    def __init__(self):
        self.batches = []

    def encode_text(self, texts):
        self.batches.append(len(texts))
        rows = [self.vector(t) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=1)

    def vector(self, text):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))


def test_zeroshot_classifier_equals_manual_loop():
    model = HashTextModel()
    classnames = ["cat", "dog", "red car"]
    templates = ["a photo of a {}.", "a drawing of the {}.", "{}"]
    got = P.zeroshot_classifier(model, classnames, templates, batch_size=4)
    assert model.batches == [4, 4, 1]
    for c, name in enumerate(classnames):
        prompts = torch.stack([model.vector(t.format(name)) for t in templates])
        mean = torch.nn.functional.normalize(prompts, dim=1).mean(0)
        torch.testing.assert_close(got[c], mean / mean.norm())
    assert got.norm(dim=1).sub(1).abs().max() < 1e-6
    with pytest.raises(InputError, match=r"'\{\}'"):
        P.zeroshot_classifier(model, classnames, ["no placeholder"])


def test_revisited_keys():
    db = unit([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    out = P.evaluate_revisited(unit([[1.0, 0.1]]), db, [{"easy": [0], "hard": [2], "junk": [1]}])
    assert out["easy_map"] == 100.0
    assert out["medium_map"] == pytest.approx(100 * ((1 + 1) / 2 + (1 / 1 + 2 / 2) / 2) / 2)
    assert math.isclose(out["hard_map"], 100.0)  # easy item 0 is junk in "hard": item 2 ranks first
    assert len(out) == 12


def test_zeroshot_label_sets_accept_any_mapped_class():
    from mcip.eval.protocols import evaluate_zeroshot

    classifier = torch.eye(4)
    images = torch.tensor([[0.1, 0.9, 0.0, 0.0], [0.0, 0.0, 0.2, 0.8], [0.9, 0.1, 0.0, 0.0]])
    # image 0 accepts {0, 1} (predicted 1: hit); image 1 accepts {2} (predicted 3: miss, but top-2 hit)
    out = evaluate_zeroshot(images, torch.tensor([0, 2, 3]), classifier, label_sets=((0, 1), (2,), (3,)))
    assert out["top1"] == pytest.approx(100 / 3)
    assert out["top5"] == pytest.approx(100.0)
    plain = evaluate_zeroshot(images, torch.tensor([1, 3, 0]), classifier)
    assert plain["top1"] == pytest.approx(100.0)


def test_zeroshot_classifier_of_a_real_model_equals_the_per_prompt_recipe(model_specs):
    """An EmbeddingModel goes through the length-ordered, deduplicated encoder (two class names collide
    in one template: 'the {}' with 'dog' and 'the dog' in '{}'): the classifier equals CLIP's recipe on
    ``encode_text`` of every prompt, one prompt at a time."""
    import mcip

    kwargs = dict(model_specs["openclip"])
    model = mcip.load_model(kwargs.pop("spec"), **kwargs).eval()
    classnames = ["dog", "the dog", "a very long class name with many words in it"]
    templates = ["the {}", "{}", "a blurry photo of a {} on a sunny day."]
    got = P.zeroshot_classifier(model, classnames, templates, batch_size=2)
    with torch.no_grad():
        for c, name in enumerate(classnames):
            prompts = torch.cat([model.encode_text([t.replace("{}", name)]).float() for t in templates])
            mean = torch.nn.functional.normalize(prompts, dim=1).mean(0)
            assert (got[c] - mean / mean.norm()).abs().max() <= 1e-5
