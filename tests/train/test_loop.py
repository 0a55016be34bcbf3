"""The training loop on a toy task: accumulation, AMP, validation, early stopping, skipped data."""

from __future__ import annotations

import json

import pytest
import torch

import mcip.engine.optim as optim_module
from mcip.engine.progress import read_metrics
from mcip.errors import ConfigError, InputError
from mcip.train import LoopConfig, OptimConfig, TrainingCheckpoints, load_state, train
from tests.train.toy import ToyData, accuracy_validator, make_task, weights

OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3)


def _loop(**kwargs) -> LoopConfig:
    return LoopConfig(**({"epochs": 1, "log_every": 1, "checkpoint_every": None} | kwargs))


def test_two_micro_batches_of_4_equal_one_batch_of_8(tmp_path) -> None:
    small, big = make_task(), make_task()
    train(small, ToyData(n=48, batch=4), OPTIM, _loop(grad_accum=2), tmp_path / "a", progress=False)
    result = train(big, ToyData(n=48, batch=8), OPTIM, _loop(), tmp_path / "b", progress=False)
    assert result.steps == 6
    torch.testing.assert_close(weights(small), weights(big))


class Gappy:
    """Every second batch of ``data`` is None (all of its items unreadable)."""

    def __init__(self, data: ToyData) -> None:
        self.data, self.batches_per_epoch = data, 2 * data.batches_per_epoch

    def iterate(self, epoch: int, start_batch: int = 0):
        for index, batch in enumerate(self.data.iterate(epoch, start_batch // 2)):
            if 2 * index + 1 >= start_batch - start_batch % 2:
                yield batch
                yield None


def test_a_skipped_micro_batch_leaves_the_mean_over_the_others(tmp_path) -> None:
    gappy, plain = make_task(), make_task()
    result = train(gappy, Gappy(ToyData(n=32)), OPTIM, _loop(grad_accum=2), tmp_path / "a", progress=False)
    train(plain, ToyData(n=32), OPTIM, _loop(), tmp_path / "b", progress=False)
    assert (result.steps, result.skipped_batches, result.skipped) == (4, 4, 0)
    torch.testing.assert_close(weights(gappy), weights(plain))


def test_fp16_unscales_before_clipping(tmp_path, monkeypatch) -> None:
    calls: list[tuple[str, float]] = []
    real_unscale, real_clip = torch.amp.GradScaler.unscale_, optim_module.clip_grad_norm_

    def unscale(self, optimizer):
        calls.append(("unscale", self.get_scale()))
        return real_unscale(self, optimizer)

    def clip(params, max_norm):
        params = list(params)
        calls.append(("clip", float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))))
        return real_clip(params, max_norm)

    monkeypatch.setattr(torch.amp.GradScaler, "unscale_", unscale)
    monkeypatch.setattr(optim_module, "clip_grad_norm_", clip)
    train(
        make_task(),
        ToyData(n=16),
        OPTIM,
        _loop(precision="fp16", max_steps=1),
        tmp_path / "a",
        progress=False,
    )
    assert [name for name, _ in calls] == ["unscale", "clip"]
    assert calls[0][1] > 1000  # the loss really was scaled ...
    fp16_norm = calls[1][1]
    calls.clear()
    train(make_task(), ToyData(n=16), OPTIM, _loop(max_steps=1), tmp_path / "b", progress=False)
    fp32_norm = next(value for name, value in calls if name == "clip")  # unscale_ is a no-op in fp32
    assert fp16_norm == pytest.approx(fp32_norm, rel=1e-2)  # ... and clipping saw unscaled gradients


class AutocastProbe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner, self.seen = make_task(), set()

    def forward(self, batch):
        self.seen.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return self.inner(batch)


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                                  ("fp32", None), ("auto", None)])  # fmt: skip
def test_precision_sets_autocast(tmp_path, precision: str, dtype) -> None:
    task = AutocastProbe()
    before = weights(task)
    result = train(task, ToyData(n=32), OPTIM, _loop(precision=precision), tmp_path, progress=False)
    assert task.seen == {dtype}
    assert all(torch.isfinite(torch.tensor(v)) for v in result.final_metrics.values())
    assert not torch.equal(before["inner.head.weight"], task.inner.head.weight)


def test_validation_metrics_and_summary_are_written(tmp_path, capsys) -> None:
    data = ToyData(n=64)
    validate = accuracy_validator(data)
    loop = _loop(epochs=2, log_every=3, val_every=4, checkpoint_every=5)
    result = train(make_task(), data, OPTIM, loop, tmp_path, validate=validate, val_metric="acc")
    records = read_metrics(tmp_path / "metrics.jsonl")
    val_steps = [r["step"] for r in records if "val/acc" in r]
    assert val_steps == [4, 8, 12, 16]  # every 4 steps; the epoch ends (8, 16) are not repeated
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == [3, 6, 9, 12, 15, 16]  # + the final partial interval
    assert {"acc", "grad_norm", "lr/decay", "lr/no_decay", "items_per_s", "skipped"} <= set(train_records[0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 16 and summary["epochs_done"] == 2 and summary["skipped"] == 0
    best = max((r["val/acc"], -r["step"]) for r in records if "val/acc" in r)
    assert (summary["best_metric"], -summary["best_step"]) == pytest.approx(best)
    assert load_state(result.best_checkpoint)["step"] == result.best_step
    assert result.last_checkpoint.name == "step_00000016.pt"
    assert "Trained 16 steps" in capsys.readouterr().out


def test_early_stopping(tmp_path) -> None:
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1])
    validate = lambda task: {"score": next(scores)}  # noqa: E731
    loop = _loop(val_every=1, early_stopping_patience=2, checkpoint_every=100)
    result = train(make_task(), ToyData(n=64), OPTIM, loop, tmp_path, validate=validate, val_metric="score",
                   progress=False)  # fmt: skip
    assert (result.steps, result.stopped_early, result.best_step, result.best_metric) == (3, True, 1, 0.5)
    assert load_state(result.best_checkpoint)["step"] == 1
    assert load_state(result.last_checkpoint)["batch_in_epoch"] == 3


def test_on_validate_sees_every_validation_and_can_stop_the_run(tmp_path) -> None:
    """The hook gets (epoch, step, results) of each validation; True stops there like early stopping,
    keeping the best checkpoint so far (the search prunes a trial this way)."""
    scores = iter([0.1, 0.6, 0.2, 0.9, 0.95])
    validate = lambda task: {"score": next(scores)}  # noqa: E731
    seen: list[tuple[float, int, float]] = []

    def hook(epoch, step, results):
        seen.append((epoch, step, results["score"]))
        return step == 3  # stop after the third validation

    loop = _loop(val_every=1, checkpoint_every=100)
    result = train(make_task(), ToyData(n=64), OPTIM, loop, tmp_path, validate=validate, val_metric="score",
                   progress=False, on_validate=hook)  # fmt: skip
    # ToyData(n=64) has 8 batches of 8 per epoch: step s ends at epoch s / 8
    assert seen == [(0.125, 1, 0.1), (0.25, 2, 0.6), (0.375, 3, 0.2)]
    assert (result.steps, result.stopped_early, result.best_step, result.best_metric) == (3, True, 2, 0.6)
    assert load_state(result.best_checkpoint)["step"] == 2


class Unreadable:
    """Batches of 2 readable and 6 unreadable items."""

    batches_per_epoch = 40

    def iterate(self, epoch: int, start_batch: int = 0):
        data = ToyData(n=8 * self.batches_per_epoch, batch=2)
        for b, batch in enumerate(data.iterate(epoch, start_batch), start=start_batch):
            yield batch | {"skipped": [(f"img{b}_{i}.jpg", OSError("truncated")) for i in range(6)]}


def test_mostly_unreadable_data_stops_with_the_first_failures(tmp_path) -> None:
    with pytest.raises(InputError, match=r"img0_0.jpg: OSError: truncated.*max_skipped_fraction"):
        train(make_task(), Unreadable(), OPTIM, _loop(), tmp_path, progress=False)
    # 200 items (25 batches) are needed before the guard judges
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")][-1] == 24


def test_a_few_unreadable_items_are_counted(tmp_path) -> None:
    loop = _loop(max_skipped_fraction=0.8)
    result = train(make_task(), Unreadable(), OPTIM, loop, tmp_path, progress=False)
    assert (result.steps, result.skipped) == (40, 240)
    assert (
        result.first_failures[0] == ("img0_0.jpg", "OSError: truncated") and len(result.first_failures) == 20
    )
    assert "Skipped 240 unreadable items" in result.summary()


def test_ctrl_c_writes_a_checkpoint_then_resume_finishes(tmp_path) -> None:
    class Interrupting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.calls = make_task(), 0

        def forward(self, batch):
            self.calls += 1
            if self.calls == 5:
                raise KeyboardInterrupt
            return self.inner(batch)

    loop = _loop(checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        train(Interrupting(), ToyData(n=64), OPTIM, loop, tmp_path, progress=False)
    state = load_state(TrainingCheckpoints(tmp_path).latest())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 0, 4)
    result = train(Interrupting(), ToyData(n=64), OPTIM, loop, tmp_path, resume=True, progress=False)
    assert result.steps == 8


def test_head_params_train_at_the_multiplied_lr(tmp_path) -> None:
    task = make_task()
    optim = OptimConfig(lr=1e-3, min_lr=1e-4, head_lr_mult=10.0)
    train(task, ToyData(n=32), optim, _loop(), tmp_path, head_params=[task.head.weight], progress=False)
    first = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert (first["lr/decay"], first["lr/no_decay"], first["lr/head"]) == pytest.approx((1e-3, 1e-3, 1e-2))
    with pytest.raises(ConfigError, match="head_params must be parameters of the task"):
        train(
            task,
            ToyData(n=32),
            optim,
            _loop(),
            tmp_path / "b",
            head_params=[torch.nn.Parameter(torch.ones(2))],
        )


def test_a_used_run_folder_needs_resume(tmp_path) -> None:
    train(make_task(), ToyData(n=32), OPTIM, _loop(), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="pass resume=True"):
        train(make_task(), ToyData(n=32), OPTIM, _loop(), tmp_path, progress=False)


def test_max_steps_replaces_epochs(tmp_path) -> None:
    result = train(make_task(), ToyData(n=32), OPTIM, _loop(epochs=1, max_steps=10), tmp_path, progress=False)
    assert (result.steps, result.epochs_done) == (10, 2)
    assert load_state(result.last_checkpoint)["scheduler"]["last_epoch"] == 10


def test_resume_without_a_checkpoint_starts_fresh(tmp_path) -> None:
    result = train(make_task(), ToyData(n=32), OPTIM, _loop(), tmp_path, resume=True, progress=False)
    assert result.steps == 4


def test_compile_wraps_the_task_and_checkpoints_stay_plain(tmp_path, monkeypatch) -> None:
    real_compile, compiled = torch.compile, []

    def eager_compile(model, **kwargs):
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    task = make_task()
    result = train(task, ToyData(n=32), OPTIM, _loop(compile=True), tmp_path, progress=False)
    assert compiled == [task]
    assert set(load_state(result.last_checkpoint)["task"]) == set(task.state_dict())


@pytest.mark.parametrize(
    "kwargs",
    [{"epochs": 0}, {"grad_accum": 0}, {"precision": "fp8"}, {"clip_grad_norm": 0.0}, {"max_steps": 0},
     {"val_every": 0}, {"max_skipped_fraction": 0.0}, {"log_every": 1.5}, {"early_stopping_patience": 0}],
)  # fmt: skip
def test_loop_config_validation(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        LoopConfig(**kwargs)


def test_train_argument_checks(tmp_path) -> None:
    data = ToyData(n=16)
    with pytest.raises(ConfigError, match="validate function"):
        train(make_task(), data, OPTIM, _loop(), tmp_path, val_metric="acc")
    with pytest.raises(ConfigError, match="needs val_metric"):
        train(make_task(), data, OPTIM, _loop(early_stopping_patience=2), tmp_path, validate=lambda t: {})
    with pytest.raises(ConfigError, match="lower grad_accum"):
        train(make_task(), data, OPTIM, _loop(grad_accum=3), tmp_path)
    with pytest.raises(InputError, match="scalar tensor under 'loss'"):
        train(lambda_task(), data, OPTIM, _loop(), tmp_path, progress=False)


def lambda_task() -> torch.nn.Module:
    class NoLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2, 2))

        def forward(self, batch):
            return {"logits": self.w}

    return NoLoss()
