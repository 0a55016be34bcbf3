"""The realign stage on cached lower-text-block states (mcip.stages.text_cache): it trains only the unlocked
side, never runs the frozen blocks per step, and reuses the cache on a second run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mcip
import mcip.stages.run as stages
from mcip.stages.resolve import load_config, plan
from mcip.stages.run import run_stage
from tests.train.synth import make_dataset
from tests.train.test_stages import FAST


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth"), per_class=6)


def _config(spec, synth, out: Path, cache: Path, *extra):
    raw = load_config(
        None,
        [
            "stage=realign",
            f"model.spec={spec}",
            f"data.train={synth}",
            f"out={out}",
            f"cache_dir={cache}",
            *FAST,
            *extra,
        ],
    )
    (cfg,) = plan(raw)
    return cfg


def _spy(monkeypatch) -> list:
    """Records each stage's task and counts calls of the frozen lower blocks (text_hidden_below)."""
    seen = []
    real_train = stages.train

    def spy(task, *args, **kwargs):
        calls = {"below": 0}
        below = task.model.text_hidden_below

        def counting(*a, **k):
            calls["below"] += 1
            return below(*a, **k)

        task.model.text_hidden_below = counting  # during the loop: must never run
        seen.append((task, calls))
        return real_train(task, *args, **kwargs)

    monkeypatch.setattr(stages, "train", spy)
    return seen


@pytest.mark.parametrize("name", ["composed", "openclip"])
def test_realign_on_the_cache_trains_only_the_unlocked_side(name, model_specs, synth, tmp_path, monkeypatch):
    kwargs = dict(model_specs[name])
    torch.manual_seed(0)
    base_model = mcip.load_model(kwargs.pop("spec"), **kwargs)
    base = mcip.save_model(base_model, tmp_path / "base")
    before = {n: p.detach().clone() for n, p in base_model.net.state_dict().items()}
    seen = _spy(monkeypatch)
    result = run_stage(_config(base, synth, tmp_path / "run", tmp_path / "cache"), progress=False)
    ((task, calls),) = seen
    assert task.text_hidden is not None and task.text_hidden.n_last == 1
    assert calls["below"] == 0  # the frozen blocks never ran during training
    assert result.train.steps == 3
    trained = mcip.load_model(result.model_dir)
    last, norms = trained.text_block_prefixes()[-1], trained.text_final_norm_prefixes()
    unlocked = [last, *norms]
    after = trained.net.state_dict()
    for n, value in after.items():
        upper = any(n.startswith(p + ".") for p in unlocked)
        if not upper and trained.part_of(n) not in ("text_projector", "logit_scale", "logit_bias"):
            assert torch.equal(value, before[n]), n  # frozen (image side, embeddings, lower blocks): bitwise
    moved = {n for n in after if not torch.equal(after[n], before[n])}
    assert any(n.startswith(last + ".") for n in moved) and "logit_scale" in moved


def test_second_run_reuses_the_cache_and_the_switch_turns_it_off(model_specs, synth, tmp_path, monkeypatch):
    import mcip.stages.text_cache as text_cache

    base = mcip.save_model(mcip.load_model(model_specs["openclip"]["spec"]), tmp_path / "base")
    computed = []
    rows = text_cache._hidden_rows
    monkeypatch.setattr(text_cache, "_hidden_rows", lambda *a, **k: computed.append(1) or rows(*a, **k))
    seen = _spy(monkeypatch)
    cache = tmp_path / "cache"
    run_stage(_config(base, synth, tmp_path / "a", cache), progress=False)
    assert computed
    computed.clear()
    run_stage(_config(base, synth, tmp_path / "b", cache, "optim.lr=1e-4"), progress=False)
    assert not computed and seen[1][0].text_hidden is not None  # same tower, captions, blocks: reused
    run_stage(_config(base, synth, tmp_path / "c", cache, "unlock_text_blocks=2"), progress=False)
    assert computed and seen[2][0].text_hidden.n_last == 2  # other unlocked count: a new cache
    computed.clear()
    run_stage(_config(base, synth, tmp_path / "d", cache, "realign_text_cache=false"), progress=False)
    assert not computed and seen[3][0].text_hidden is None


@pytest.mark.ddp
def test_realign_on_the_cache_under_torchrun_with_two_cpu_ranks(model_specs, synth, tmp_path):
    """Rank 0 writes the cache, rank 1 reads it (one cache folder); DDP trains the unlocked side."""
    import os
    import subprocess
    import sys

    base = mcip.save_model(mcip.load_model(model_specs["openclip"]["spec"]), tmp_path / "base")
    sets = [
        "stage=realign",
        f"model.spec={base}",
        f"data.train={synth}",
        f"out={tmp_path / 'ddp'}",
        f"cache_dir={tmp_path / 'cache'}",
        *[s for s in FAST if not s.startswith("data.batch_size")],
        "data.batch_size=4",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "mcip.cli", "train", "--quiet"]
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    trained, start = mcip.load_model(tmp_path / "ddp" / "model"), mcip.load_model(base)
    assert not torch.equal(trained.net.text_projection, start.net.text_projection)
    assert torch.equal(trained.net.transformer.resblocks[0].attn.in_proj_weight,
                       start.net.transformer.resblocks[0].attn.in_proj_weight)  # fmt: skip
    hidden = [p for p in (tmp_path / "cache").iterdir() if (p / "offsets.npy").is_file()]
    # one folder for the training captions (float16) and one for the val captions (float32), each
    # written once by rank 0 and read by rank 1
    dtypes = sorted(str(np.load(p / "features.npy", mmap_mode="r").dtype) for p in hidden)
    assert dtypes == ["float16", "float32"]
