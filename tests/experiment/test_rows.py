"""The rows as a table of callables (``mcip.experiment.rows``): each row's ``make`` asks the runner for the
stages it trains and the rows it builds on; nothing is trained here (a runner that records the calls)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mcip.errors import ConfigError
from mcip.experiment.rows import GUARDED, ROWS, Row, RunSettings, select_rows
from mcip.experiment.runner import Runner


class Recording(Runner):
    """A runner whose stages and merge return a name and record (pipeline, stage, start, out)."""

    def __init__(self, tmp_path: Path, **settings) -> None:
        super().__init__(tmp_path, RunSettings(**settings), progress=False, log=lambda m: None)
        self.data = {"train": "train.jsonl", "train_no_captions": "nocap.jsonl", "val": "val.jsonl"}
        self.calls: list[tuple] = []

    def stage_model(self, pipeline, stage, spec, out, extra, same_as=None):
        self.calls.append((pipeline, stage, str(spec), out) + ((same_as,) if same_as else ()))
        return f"{out}-model"

    def wise(self, finetuned, out):
        self.calls.append(("wise", str(finetuned), out))
        return f"{out}-model"


def test_every_row_of_the_table_is_made_once_from_the_rows_it_builds_on(tmp_path):
    runner = Recording(tmp_path, all_rows=True)
    models = runner.stages("base", Path("captions.jsonl"))
    assert models == {
        "baseline": "base",
        "GPR-FT (no proj.)": "gpr-no-proj-model",
        "GPR-FT": "gpr-model",
        "2SFT": "2sft-model",
        "MCIP": "mcip-model",
        "MCIP+Re-A": "mcip-rea-model",
        GUARDED: "guard-rea-model",
    }
    assert runner.calls == [
        ("2sft", "gpr", "base", "gpr-no-proj"),
        ("2sft", "gpr", "base", "gpr"),
        ("2sft", "realign", "gpr-model", "2sft"),  # GPR-FT's model, not trained again
        ("mcip+rea", "mcip", "base", "mcip"),
        ("mcip+rea", "realign", "mcip-model", "mcip-rea"),
        ("wise", "mcip-model", "guard-wise"),  # without the drift regulariser: the MCIP row's model
        # the MCIP+Re-A row's run is offered: its record may show this Re-A's model (experiment.reuse)
        ("mcip+rea", "realign", "guard-wise-model", "guard-rea", "mcip-rea"),
    ]


def test_the_guarded_row_alone_trains_what_it_builds_on(tmp_path):
    runner = Recording(tmp_path, guard_distill_weight=3.0)
    runner.start_rows("base", Path("captions.jsonl"))
    assert runner.model_of("guarded") == "guard-rea-model"
    assert runner.calls == [
        ("mcip+rea", "mcip", "base", "guard-mcip"),  # its own MCIP stage, with the regulariser
        ("wise", "guard-mcip-model", "guard-wise"),
        ("mcip+rea", "realign", "guard-wise-model", "guard-rea"),  # no MCIP+Re-A run to offer
    ]


def test_a_source_may_add_a_row_of_its_own(tmp_path):
    mine = Row("mine", "a row of this source", "mine", lambda run: f"mine from {run.model_of('gpr')}")

    class WithARow(Recording):
        def rows(self):
            return [*super().rows(), mine]

    runner = WithARow(tmp_path)
    models = runner.stages("base", Path("captions.jsonl"))
    assert models["mine"] == "mine from gpr-model"
    assert [c[-1] for c in runner.calls].count("gpr") == 1


@pytest.mark.parametrize(
    "method, all_rows, expected",
    [
        ("both", False, ["baseline", "GPR-FT", "2SFT", "MCIP", "MCIP+Re-A", GUARDED]),
        ("2sft", False, ["baseline", "GPR-FT", "2SFT"]),
        ("2sft", True, ["baseline", "GPR-FT (no proj.)", "GPR-FT", "2SFT"]),
        ("mcip+rea", False, ["baseline", "MCIP", "MCIP+Re-A", GUARDED]),
    ],
)
def test_select_rows_keeps_table_order(method, all_rows, expected):
    assert [r.name for r in select_rows(all_rows, method)] == expected


def test_the_table_is_well_formed():
    assert len({r.method for r in ROWS}) == len(ROWS) and all(callable(r.make) for r in ROWS)
    assert tuple(ROWS[0]) == ("baseline", "the starting model")  # rows still unpack as (name, description)
    with pytest.raises(ConfigError, match="choose one of mcip\\+rea, 2sft, both"):
        select_rows(method="all")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ROWS[0].name = "x"
