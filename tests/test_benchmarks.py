"""The benchmark scripts run (tiny model, one step) so they do not rot; their numbers are not checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import mcip


def _load(name: str):
    path = Path(__file__).parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_benchmark_functions_run(tiny_openclip):
    bench = _load("train_step")
    model = mcip.load_model(f"openclip:{tiny_openclip}")
    model.train()
    batch = {
        "pixels": torch.randn(4, 3, 32, 32),
        "labels": torch.randint(0, 100, (4,)),
        "index": torch.arange(4),
    }
    out = bench.bench_mcip(model, batch, 2, 1, "cpu") | bench.bench_realign(model, batch, 1, "cpu")
    out |= bench.bench_gpr_overhead(model, batch, 1, "cpu", "fp32")
    assert set(out) >= {"mcip_speedup", "realign_speedup", "gpr_overhead"}


def test_realign_step_benchmark_functions_run(model_specs):
    bench = _load("realign_step")
    kwargs = dict(model_specs["composed"])
    model = mcip.load_model(kwargs.pop("spec"), **kwargs)
    model.train()
    out = bench.bench_realign_cache(model, 8, 1, 1, "cpu") | bench.fp16_tolerance(model, 8, 1, "cpu")
    assert set(out) >= {"realign_step_speedup", "fp16_vs_fp32_loss_rel", "fp16_vs_fp32_grad_rel"}
    assert out["fp32_vs_full_loss_rel"] < 1e-5  # the float32 cache is the full tower, up to rounding


def test_index_pca_benchmark_measures_recall_and_size(tmp_path):
    """benchmarks/index_pca.py on clustered vectors: recall is a share (1.0 at a K that keeps every
    dimension of a rank-deficient set), the PCA index is smaller than the full one."""
    bench = _load("index_pca")
    from mcip.index import IndexRecord

    emb = bench.synthetic(600, 32)
    records = [IndexRecord(str(i), Path(f"{i}.png")) for i in range(len(emb))]
    out = bench.measure(emb, records, [8, 16], 50, emb[:5], tmp_path)
    for row in out["by_dim"].values():
        assert 0 <= row["image_recall"] <= 1 and 0 <= row["text_recall"] <= 1 and row["size_ratio"] < 1
    assert out["by_dim"][16]["image_recall"] >= out["by_dim"][8]["image_recall"] - 0.1
    low_rank = emb[:, :4] @ np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    low_rank /= np.linalg.norm(low_rank, axis=1, keepdims=True)
    exact = bench.measure(low_rank, records, [8], 50, None, tmp_path / "r")
    assert exact["by_dim"][8]["image_recall"] > 0.95  # 4 real dimensions: a PCA to 8 keeps all of them


def test_eval_map_benchmark_prints_its_ratios(capsys):
    bench = _load("eval_map")
    assert bench.main(["--n", "200", "--dim", "16"]) == 0
    out = capsys.readouterr().out
    assert "RESULT eval_map_vs_matmul " in out and "target <=1.5" in out


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=pytest.mark.slow), False])
def test_encode_benchmark_runs(tiny_openclip, tmp_path, capsys, compiled):
    """benchmarks/encode.py on a few PNGs with the tiny open_clip model: every RESULT line is printed (the
    torch.compile ones unless --no-compile)."""
    from tests.index.helpers import write_pngs

    bench = _load("encode")
    write_pngs(tmp_path / "img", [f"{i}.png" for i in range(8)])
    args = ["--images", str(tmp_path / "img"), "--model", f"openclip:{tiny_openclip}", "--n", "8"]
    assert bench.main([*args, "--batch", "4", "--workers", "0", *([] if compiled else ["--no-compile"])]) == 0
    out = capsys.readouterr().out
    compiled_lines = (
        "encode_compiled_forward_speedup",
        "encode_compiled_workers_speedup",
        "encode_compiled_min_cosine",
    )
    assert all((f"RESULT {name} " in out) == compiled for name in compiled_lines)
    for name in (
        "encode_vs_limit",
        "encode_index_build_vs_limit",
        "encode_bf16_min_cosine",
        "encode_layout_min_cosine",
    ):
        assert f"RESULT {name} " in out
    for name in (
        "encode_workers_vs_serial_bound",
        "encode_jpeg_draft_decode_speedup",
    ):
        assert f"RESULT {name} " in out


def test_encode_benchmark_default_images_are_jpeg_photos(tmp_path):
    """With no --images, benchmarks/encode.py writes photo-sized JPEGs (where draft decoding matters)."""
    from PIL import Image

    bench = _load("encode")
    folder = bench.synthetic_photos(tmp_path / "s", 3)
    files = sorted(Path(folder).iterdir())
    assert len(files) == 3 and all(Image.open(f).format == "JPEG" for f in files)
    assert Image.open(files[0]).size == (1600, 1200)


def test_sys_time_benchmark_child_measures_a_training_step(model_specs):
    """benchmarks/sys_time.py's child (both malloc settings, and the tuned one in the default layout) trains the image tower and reports CPU
    times and faults; a tiny Hugging Face model stands in for the lab's."""
    bench = _load("sys_time")
    spec = model_specs["hf-clip"]["spec"]
    for mode in ("default", "tuned", "tuned-contiguous"):
        out = bench.run_child(mode, 1, 1, 2, model=spec, image_size=32)
        assert out["steps"] == 1 and out["user"] >= 0 and out["minflt"] >= 0
        assert out["tuned"] is mode.startswith("tuned")
