"""The run of the resume test: ``python -m tests.train.resume_run RUN_DIR [--resume] [--sleep S]``.

Dropout and noise augmentation make the result depend on the RNG streams; 2 epochs of 10 batches,
a checkpoint every 2 steps, validation every 3 steps and at each epoch end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcip.train import LoopConfig, OptimConfig, train
from tests.train.toy import ToyData, accuracy_validator, make_task

BATCHES_PER_EPOCH = 10


def run(run_dir: Path, resume: bool = False, sleep: float = 0.0):
    task = make_task(seed=1, dropout=0.2, sleep=sleep)
    data = ToyData(n=8 * BATCHES_PER_EPOCH, batch=8, noise=0.3, seed=3)
    loop = LoopConfig(epochs=2, checkpoint_every=2, log_every=3, val_every=3, keep_last=3, seed=5)
    optim = OptimConfig(lr=1e-2, min_lr=1e-4, warmup_steps=2)
    validate = accuracy_validator(data)
    result = train(task, data, optim, loop, run_dir, validate=validate, val_metric="acc", resume=resume,
                   progress=False)  # fmt: skip
    return task, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    run(args.run_dir, args.resume, args.sleep)


if __name__ == "__main__":
    main()
