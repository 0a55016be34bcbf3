"""The benchmark scripts run (tiny model, one step) so they do not rot; their numbers are not checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
