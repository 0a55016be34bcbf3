"""FeatureCache: computed once, resumable after a crash, shape/dtype honoured; RaggedFeatures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mcip.data import FeatureCache, RaggedFeatures, cache_key
from mcip.errors import ConfigError, InputError


def _rows(indices: list[int], dim: int = 4) -> np.ndarray:
    return np.array([[i + j / 10 for j in range(dim)] for i in indices], dtype=np.float32)


class Recorder:
    """compute(indices) that records its calls and can fail on the k-th call (a crash)."""

    def __init__(self, fail_on_call: int | None = None, as_tensor: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.fail_on_call, self.as_tensor = fail_on_call, as_tensor

    def __call__(self, indices: list[int]):
        self.calls.append(list(indices))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("simulated crash")
        rows = _rows(indices)
        return torch.from_numpy(rows) if self.as_tensor else rows

    @property
    def rows(self) -> list[int]:
        return [i for call in self.calls for i in call]


def test_computes_once_then_loads_read_only(tmp_path):
    cache, compute = FeatureCache(tmp_path), Recorder(as_tensor=True)
    first = cache.get_or_compute("k", 10, 4, compute, batch_size=4)
    assert compute.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert isinstance(first, np.memmap) and first.shape == (10, 4) and first.dtype == np.float16
    np.testing.assert_allclose(first, _rows(list(range(10))), rtol=1e-3)
    again = cache.get_or_compute("k", 10, 4, Recorder(fail_on_call=1), batch_size=4)
    np.testing.assert_array_equal(again, first)
    assert not again.flags.writeable
    assert json.loads((tmp_path / "k" / "progress.json").read_text())["rows"] == 10
    assert (tmp_path / "k" / "complete.json").is_file()


def test_resumes_after_a_crash_computing_only_missing_rows(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cache.get_or_compute("k", 10, 4, Recorder(fail_on_call=3), batch_size=3)
    assert json.loads((tmp_path / "k" / "progress.json").read_text())["rows"] == 6
    assert not (tmp_path / "k" / "complete.json").exists()
    resume = Recorder()
    out = cache.get_or_compute("k", 10, 4, resume, batch_size=3)
    assert resume.rows == [6, 7, 8, 9]
    np.testing.assert_allclose(out, _rows(list(range(10))), rtol=1e-3)


def test_dtype_and_shape_are_honoured_and_a_mismatch_recomputes(tmp_path):
    cache = FeatureCache(tmp_path)
    out = cache.get_or_compute("k", 5, 4, Recorder(), dtype="float32")
    assert out.dtype == np.float32 and out.shape == (5, 4)
    np.testing.assert_array_equal(out, _rows(list(range(5))))
    redo = Recorder()
    with pytest.warns(UserWarning, match="recomputing"):
        out = cache.get_or_compute("k", 6, 4, redo, dtype="float16")
    assert redo.rows == list(range(6)) and out.shape == (6, 4) and out.dtype == np.float16


def test_bad_compute_output_and_settings(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(InputError, match=r"returned shape \(2, 3\), expected \(2, 4\)"):
        cache.get_or_compute("k", 2, 4, lambda idx: np.zeros((len(idx), 3)))
    with pytest.raises(ConfigError, match="float"):
        cache.get_or_compute("k", 2, 4, Recorder(), dtype="int8")


def test_cache_key_is_stable_and_unambiguous():
    assert cache_key("a", "b") == cache_key("a", "b") and len(cache_key("a")) == 16
    assert cache_key("ab", "c") != cache_key("a", "bc")


def _naive_rows_for(offsets, features, indices):
    feats, owner = [], []
    for j, i in enumerate(indices):
        for r in range(offsets[i], offsets[i + 1]):
            feats.append(features[r])
            owner.append(j)
    return np.array(feats).reshape(-1, features.shape[1]), np.array(owner, dtype=np.int64)


def test_ragged_rows_for_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=20)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    features = rng.standard_normal((offsets[-1], 5)).astype(np.float32)
    ragged = RaggedFeatures(offsets, features)
    for indices in ([3, 0, 3, 19], [int(i) for i in np.flatnonzero(counts == 0)[:2]], list(range(20))):
        feats, owner = ragged.rows_for(torch.tensor(indices))
        want_f, want_o = _naive_rows_for(offsets, features, indices)
        np.testing.assert_array_equal(feats.numpy(), want_f)
        assert owner.dtype == torch.long and owner.tolist() == want_o.tolist()
    with pytest.raises(InputError, match="Record indices"):
        ragged.rows_for([20])


def test_ragged_from_cache_stores_the_flat_rows(tmp_path):
    offsets = [0, 2, 2, 5]
    compute = Recorder()
    ragged = RaggedFeatures.from_cache(FeatureCache(tmp_path), "caps", offsets, 4, compute, dtype="float32")
    feats, owner = ragged.rows_for([2, 0])
    assert compute.rows == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(feats.numpy(), _rows([2, 3, 4, 0, 1]))
    assert owner.tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(InputError, match="offsets end at"):
        RaggedFeatures([0, 3], np.zeros((2, 4)))
