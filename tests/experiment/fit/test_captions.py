"""mcip fit's caption policy (mcip.experiment.fit.captions): the filters on retrieved captions, each expected drop
written out by hand."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mcip.experiment.fit.captions import filter_retrieved, noise_threshold, normalise


def _e(text: str, score: float | None = 0.9) -> dict:
    return {"text": text, "source": "retrieval:pool.txt", "score": score}


def test_noise_threshold_is_median_plus_three_robust_deviations():
    # scores of one image against three texts: 1.0, 0.0, 0.6 -> median 0.6, |dev| 0.4, 0.6, 0 -> MAD 0.4
    image = np.array([[1.0, 0.0]])
    pool = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    assert noise_threshold(image, pool) == pytest.approx(0.6 + 3 * 1.4826 * 0.4)
    # two images, four texts: scores (0.1, 0.2, 0.3, 0.9) and (0.2, 0.2, 0.1, 0.0): sorted
    # 0, .1, .1, .2, .2, .2, .3, .9 -> median 0.2; |dev| .2 .1 .1 0 0 0 .1 .7 -> MAD 0.1
    image = np.eye(4)[:2]
    pool = np.array([[0.1, 0.2], [0.2, 0.2], [0.3, 0.1], [0.9, 0.0]])
    assert noise_threshold(image, np.hstack([pool, np.zeros((4, 2))])) == pytest.approx(
        0.2 + 3 * 1.4826 * 0.1
    )


def test_normalise_ignores_case_punctuation_and_spaces():
    assert normalise("  A Red  Heart. ") == normalise("a red heart") == "a red heart"


def test_filters_drop_what_would_confuse_products():
    label_of = {"h1": "heart", "h2": "heart", "s1": "star", "s2": "star"}
    names = {"heart": "red heart", "star": "gold star"}
    own = {  # normalised names and own captions per class
        "heart": {"red heart", "heart", "a red heart on a wooden table"},
        "star": {"gold star", "star", "a shiny gold star sticker"},
    }
    retrieved = {
        "h1": [
            _e("A red heart on a wooden table."),  # its own class's caption: kept
            _e("a shiny gold star sticker"),  # another class's own caption: dropped
            _e("valentine card", 0.31),  # below the threshold 0.4: dropped
            _e("love and romance"),  # kept
        ],
        "h2": [_e("Gold Star!"), _e("love and romance")],  # another class's name: dropped; kept
        "s1": [_e("a gold star and a red heart"), _e("a star is born")],  # names its own too: kept; kept
        "s2": [_e("something with a red heart"), _e("love and romance")],  # names only another: dropped
    }
    kept, drops = filter_retrieved(retrieved, label_of, own, names, threshold=0.4)
    # "love and romance" is left on 2 of 4 images (50% > 5%) of 2 classes: generic, dropped everywhere
    assert {k: [e["text"] for e in v] for k, v in kept.items()} == {
        "h1": ["A red heart on a wooden table."],
        "h2": [],
        "s1": ["a gold star and a red heart", "a star is born"],
        "s2": [],
    }
    assert drops == Counter(
        {
            "another class's name or own caption": 2,
            "below the noise threshold": 1,
            "names another class": 1,
            "generic (many classes)": 3,
        }
    )


def test_a_caption_on_more_than_three_classes_is_generic_even_when_rare():
    label_of = {f"i{k}": f"c{k}" for k in range(100)}
    names = {f"c{k}": f"class {k}" for k in range(100)}
    own = {f"c{k}": {f"class {k}"} for k in range(100)}
    retrieved = {f"i{k}": [_e("a product photo")] for k in range(4)}  # 4 classes, 4% of the images
    retrieved |= {f"i{k}": [_e("a studio shot")] for k in range(4, 7)}  # 3 classes, 3%: kept
    kept, drops = filter_retrieved(retrieved, label_of, own, names, threshold=0.0)
    assert [k for k, v in kept.items() if v] == ["i4", "i5", "i6"]
    assert drops["generic (many classes)"] == 4
