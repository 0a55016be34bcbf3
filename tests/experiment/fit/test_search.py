"""The recipe search (mcip.experiment.fit.search) with a stand-in for training: each setting's val curve is written
here by hand, so which trials run, which are pruned, what is chosen and what a resumed search redoes are
known in advance. The real stages run in tests/experiment/fit/test_fit.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mcip.errors import ConfigError
from mcip.experiment.fit.search import LR_GRID, RecipeSearch, SearchSpace

# val I2I after epochs 1, 2, 3, ... for each learning rate of the grid (1e-4, 3e-4, 3e-5, 1e-5)
CURVES = {
    1e-4: [50.0, 55.0, 56.0, 56.0, 55.0, 54.0],
    3e-4: [52.0, 53.0, 50.0, 49.0, 48.0, 47.0],
    3e-5: [40.0, 45.0, 48.0, 50.0, 51.0, 52.0],
    1e-5: [30.0, 33.0, 36.0, 39.0, 41.0, 43.0],
}
PATIENCE = 2  # the stand-in's early stopping, as the loop's (validations without a new best)


class FakeStage:
    """Trains nothing: reports the hand-written curve epoch by epoch to ``on_validate`` (one step per
    epoch), stops on the hook or after ``PATIENCE`` epochs without a new best, writes a model folder."""

    def __init__(self, curves=CURVES, bonus=None) -> None:
        self.curves, self.bonus, self.calls = curves, bonus or {}, []

    def __call__(self, params, folder: Path, on_validate):
        self.calls.append(dict(params))
        curve = [v + self.bonus.get(params.get("caption_policy"), 0.0) for v in self.curves[params["lr"]]]
        best, best_step, bad, epochs = None, None, 0, 0
        for epoch, value in enumerate(curve, start=1):
            epochs = epoch
            if best is None or value > best:
                best, best_step, bad = value, epoch, 0
            else:
                bad += 1
            if on_validate(float(epoch), epoch, {"i2i_map": value, "t2i_r5": 10.0}) or bad >= PATIENCE:
                break
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "weights").write_text(str(params))
        (folder / "checkpoints").mkdir()
        result = SimpleNamespace(best_metric=best, best_step=best_step, epochs_done=epochs, steps=epochs)
        return result, folder / "model"


def _search(tmp_path, **kw) -> RecipeSearch:
    return RecipeSearch(tmp_path / "search", kw.pop("mode", "quick"), log=lambda s: None, **kw)


def test_quick_search_runs_the_grid_prunes_trailing_rates_and_keeps_the_best_model(tmp_path):
    """Successive halving (reduction factor 2, first rung after epoch 1) on the curves above:
    1e-4 runs until early stopping (best 56 at epoch 3, stops after epoch 5); 3e-4 leads at epoch 1 (52 vs
    50) but trails at epoch 2 (53 vs 55): pruned there; 3e-5 (40) and 1e-5 (30) trail at epoch 1."""
    fake = FakeStage()
    result = _search(tmp_path).run(SearchSpace("gpr"), "i2i_map", fake)
    assert [c["lr"] for c in fake.calls] == list(LR_GRID)
    states = {t.params["lr"]: (t.state, t.value, t.epochs) for t in result.trials}
    assert states == {
        1e-4: ("COMPLETE", 56.0, 5),
        3e-4: ("PRUNED", 53.0, 2),
        3e-5: ("PRUNED", 40.0, 1),
        1e-5: ("PRUNED", 30.0, 1),
    }
    assert result.best_params == {"lr": 1e-4} and result.best_value == 56.0
    assert [t.chosen for t in result.trials] == [True, False, False, False]
    assert result.model_dir.parent.name == "trial-000"
    assert (result.model_dir / "weights").read_text() == str({"lr": 1e-4})
    # only the chosen trial's model is kept, and no checkpoints
    assert sorted(p.name for p in (tmp_path / "search" / "gpr").iterdir()) == ["trial-000"]
    assert not (result.model_dir.parent / "checkpoints").exists()


def test_a_finished_search_is_read_back_and_a_stopped_one_continues(tmp_path):
    import optuna

    fake = FakeStage()
    first = _search(tmp_path).run(SearchSpace("gpr"), "i2i_map", fake)
    again = FakeStage()
    second = _search(tmp_path).run(SearchSpace("gpr"), "i2i_map", again)
    assert again.calls == [] and second.best_params == first.best_params
    assert second.model_dir == first.model_dir

    # a run stopped inside its second trial: the trial stays RUNNING in the database
    other = tmp_path / "other"
    stopped = RecipeSearch(other / "search", "quick", log=lambda s: None)
    study = optuna.create_study(study_name="gpr", storage=stopped.storage, direction="maximize")
    study.enqueue_trial({"lr": 1e-4})
    study.enqueue_trial({"lr": 3e-4})
    trial = study.ask()
    kept = other / "search" / "gpr" / "trial-000" / "model"
    kept.mkdir(parents=True)
    trial.set_user_attr("model_dir", str(kept))
    study.tell(trial, 56.0)  # the first finished ...
    study.ask()  # ... the second was running when the process died
    fake = FakeStage()
    result = RecipeSearch(other / "search", "quick", log=lambda s: None).run(
        SearchSpace("gpr"), "i2i_map", fake
    )
    assert [c["lr"] for c in fake.calls] == [3e-4, 3e-5, 1e-5]  # the stale trial again, then the rest
    # 3e-4 trails 1e-4's epoch-1 value?  1e-4 finished without reports here, so 3e-4 (52 > 53?) is judged
    # against itself at every rung and runs to its early stop (53 at epoch 2, stops after epoch 4);
    # 3e-5 and 1e-5 trail it at epoch 1
    states = [(t.params["lr"], t.state) for t in result.trials]
    assert states == [
        (1e-4, "COMPLETE"),
        (3e-4, "FAIL"),
        (3e-4, "COMPLETE"),
        (3e-5, "PRUNED"),
        (1e-5, "PRUNED"),
    ]
    assert result.best_params == {"lr": 1e-4} and result.model_dir == kept


def test_a_given_rate_is_not_searched_and_the_other_caption_policy_gets_one_trial(tmp_path):
    """Quick mode with two caption policies: the grid trains with the default one; then one trial at the
    best rate with the other. Policy "B" adds 3 points to every epoch here, so it wins."""
    fake = FakeStage(bonus={"B": 3.0})
    space = SearchSpace("mcip", caption_policies=("A", "B"))
    result = _search(tmp_path).run(space, "i2i_map", fake)
    assert fake.calls[:4] == [{"lr": lr, "caption_policy": "A"} for lr in LR_GRID]
    assert fake.calls[4:] == [{"lr": 1e-4, "caption_policy": "B"}]
    assert result.best_params == {"lr": 1e-4, "caption_policy": "B"} and result.best_value == 59.0

    fixed = FakeStage()
    result = _search(tmp_path / "fixed").run(SearchSpace("gpr", lr=3e-5), "i2i_map", fixed)
    assert fixed.calls == [{"lr": 3e-5}] and result.best_params == {"lr": 3e-5}


def test_trials_and_budget_bound_the_search(tmp_path):
    fake = FakeStage()
    result = _search(tmp_path, trials=2).run(SearchSpace("gpr"), "i2i_map", fake)
    assert [c["lr"] for c in fake.calls] == [1e-4, 3e-4]
    assert result.best_params == {"lr": 1e-4}
    spent = FakeStage()  # a budget already spent: one trial (a row needs a model), the grid's first
    result = _search(tmp_path / "b", budget_seconds=1e-9).run(SearchSpace("gpr"), "i2i_map", spent)
    assert [c["lr"] for c in spent.calls] == [1e-4] and result.best_value == 56.0
    with pytest.raises(ConfigError, match="--trials"):
        _search(tmp_path / "c", trials=0)
    with pytest.raises(ConfigError, match="--search"):
        RecipeSearch(tmp_path / "d", "fast")


def test_the_report_lists_every_trial(tmp_path):
    search = _search(tmp_path)
    search.run(SearchSpace("gpr"), "i2i_map", FakeStage())
    files = search.write_report(tmp_path / "results")
    table = files["recipe"].read_text()
    assert (
        "| trial | lr | best val i2i_map | val i2i_map | val t2i_r5 | epochs | best epoch | seconds | state |"
        in table
    )
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[0] for r in rows] == ["| 0 (chosen)", "| 1", "| 2", "| 3"]
    assert rows[0].split(" | ")[1:4] == ["1e-04", "56", "56"]
    assert rows[1].endswith("| pruned |") and rows[0].endswith("| complete |")
    assert "recipe_plot" in files and files["recipe_plot"].stat().st_size > 0


def test_given_flags_and_set_keys_fix_dimensions():
    """A flag, or a ``--set`` of the same key, fixes that dimension; flags win over --set; nothing given:
    everything is chosen."""
    from mcip.experiment.fit import FitSettings
    from mcip.experiment.fit.recipe import Given, image_space, realign_space, searchable

    def given(stage="mcip", **kw):
        return Given.of(FitSettings(data="d.csv", model="m", **kw), stage)

    assert given() == Given()
    assert given(lr=3e-4).lr == 3e-4 and given(lr=3e-4).realign_lr is None
    assert given(stage_overrides=("optim.lr=2e-5",)) == Given(lr=2e-5, realign_lr=2e-5)
    assert given(stage_overrides=("stages.mcip.optim.lr=2e-5",)).lr == 2e-5
    assert given("gpr", stage_overrides=("stages.mcip.optim.lr=2e-5",)).lr is None
    assert given(stage_overrides=("stages.realign.optim.lr=5e-5",)) == Given(realign_lr=5e-5)
    assert given(lr=1e-4, stage_overrides=("optim.lr=2e-5",)).lr == 1e-4
    assert given(stage_epochs=4).epochs == 4 and given(stage_overrides=("loop.epochs=2",)).epochs == 2
    assert given(mc_weight=0.5).mc_weight == 0.5
    assert given(stage_overrides=("loss.hard_caption_weight=0",)).hard_caption_weight == 0.0
    assert given(stage_overrides=("data.captions=mine.jsonl",)).captions is True

    policies = ("own+templates+retrieved", "own+templates")
    quick = image_space("mcip", Given(), policies, "quick", None)
    assert quick.lr is None and quick.caption_policies == policies and quick.mc_weights == ()
    full = image_space("mcip", Given(), policies, "full", None)
    assert full.mc_weights == (0.25, 0.1, 0.5) and full.hard_caption_weights == (0.1, 0.0)
    assert image_space("mcip", Given(), policies, "quick", 3e-4).lr == 3e-4  # the rate found by GPR-FT
    assert image_space("mcip", Given(), policies, "full", 3e-4).lr is None  # full mode searches again
    fixed = image_space("mcip", Given(lr=1e-4, captions=True), policies, "quick", None)
    assert not searchable(fixed)
    assert searchable(realign_space(Given())) and not searchable(realign_space(Given(realign_lr=1e-4)))


def test_dry_run_estimate_adds_up_the_parts_by_hand():
    """2SFT with --search off and 2 fixed epochs, costs chosen round: every term written out by hand."""
    from mcip.experiment.fit import FitSettings
    from mcip.experiment.fit.data import FitData
    from mcip.experiment.fit.plan import Costs, estimate_seconds
    from mcip.experiment.rows import select_rows

    rec = SimpleNamespace
    d = FitData(
        train=[rec()] * 100, val=[rec()] * 10, test=[rec()] * 20, names={str(i): "x" for i in range(5)},
        val_on_seen=True, val_source="", test_source="", dropped={}, knn=True,
    )  # fmt: skip
    s = FitSettings(data="d", model="m", method="2sft", search="off", stage_epochs=2, batch_size=50)
    costs = Costs(step=1.0, image=0.01, text=0.001, text_step=2.0)
    # validation: 0.01 * (10 val + 100 gallery) + 0.001 * 10 * 3 = 1.13; an epoch: 2 steps + 1.13 = 3.13
    # GPR-FT: 2 epochs = 6.26 (every bound); Re-A: ceil(100 * 7 / 256) = 3 steps * 2 * 0.5 + 1.13 = 4.13 an
    # epoch, patience 3: expected 6 epochs, low 4, high 30; captions: 0.01 * 100 = 1; evaluation: 3 rows *
    # 0.01 * (10 + 20 + 100) + 2 text towers * 0.001 * 5 names * 80 = 4.7
    expected, low, high = estimate_seconds(s, d, select_rows(method="2sft"), costs)
    assert expected == pytest.approx(6.26 + 6 * 4.13 + 1 + 4.7)
    assert low == pytest.approx(6.26 + 4 * 4.13 + 1 + 4.7)
    assert high == pytest.approx(6.26 + 30 * 4.13 + 1 + 4.7)
