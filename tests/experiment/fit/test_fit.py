"""``mcip fit`` end to end on a messy synthetic catalogue with a tiny model: captionless images, a missing
file, a class of one image, a corrupt test image, non-ASCII class names, seen-class validation; resume,
refusal of other settings, the dry-run plan, the recommendation rule and the bad inputs."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import mcip
from mcip.cli import main
from mcip.errors import ConfigError, InputError
from mcip.experiment.fit import FitSettings, plan_fit, read_fit_data, run_fit
from mcip.experiment.fit.report import fit_reading, recommend
from mcip.experiment.rows import GUARDED, select_rows
from tests.train.synth import make_dataset

FAST = dict(
    max_steps=2,
    batch_size=8,
    num_workers=0,
    stage_epochs=1,
    realign_epochs=2,
    realign_patience=1,
    templates_per_image=2,
    wise_grid=(0.0, 0.5, 1.0),
    stage_overrides=("loop.precision=fp32", "loop.log_every=1", "loop.checkpoint_every=2"),
    search="quick",
    trials=2,  # the grid's first two rates per study (1e-4, 3e-4; Re-A 1e-4, 1e-5)
)


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> dict:
    """train.csv: 11 classes, captions only on some rows, a listed file that is missing and a class of
    one image; test.csv: other images of the same classes, one of them corrupt; names.tsv with non-ASCII
    names; pool.txt."""
    root = tmp_path_factory.mktemp("catalogue")
    train_rows = list(csv.DictReader(make_dataset(root / "train", per_class=6).open()))
    test_rows = list(csv.DictReader(make_dataset(root / "test", per_class=3, seed=1).open()))
    rows = []
    for i, r in enumerate(train_rows):
        path = str(root / "train" / r["path"])
        rows.append({"path": path, "label": r["label"], "captions": r["captions"] if i % 3 == 0 else ""})
    rows.append({"path": str(root / "train" / "gone.png"), "label": "red_circle", "captions": ""})
    single = root / "train" / "single.png"
    shutil.copy(root / "train" / train_rows[0]["path"], single)
    rows.append({"path": str(single), "label": "lonely_one", "captions": ""})
    tests = [{"path": str(root / "test" / r["path"]), "label": r["label"]} for r in test_rows]
    (root / "test" / test_rows[0]["path"]).write_bytes(b"not a png")
    labels = sorted({r["label"] for r in rows})
    names = root / "names.tsv"
    names.write_text(
        "".join(
            f"{label}\t{label.replace('_', ' ')} ({'é' if i % 2 else 'ü'})\n"
            for i, label in enumerate(labels)
        ),
        encoding="utf-8",
    )
    pool = root / "pool.txt"
    pool.write_text("a circle\na square\na triangle\na red thing\na blue thing\n", encoding="utf-8")
    return {
        "train": _write(root / "train.csv", rows),
        "test": _write(root / "test.csv", tests),
        "names": names,
        "pool": pool,
        "labels": labels,
    }


@pytest.fixture(scope="module")
def tiny_model(tiny_openclip, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return mcip.save_model(
        mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path_factory.mktemp("m") / "base"
    )


def _settings(catalogue, model, **extra) -> FitSettings:
    values = dict(
        data=str(catalogue["train"]),
        test=str(catalogue["test"]),
        names=str(catalogue["names"]),
        pool=str(catalogue["pool"]),
        model=str(model),
        method="both",
        **FAST,
    )
    values.update(extra)
    return FitSettings(**values)


@pytest.fixture(scope="module")
def fitted(catalogue, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "out"
    logs: list[str] = []
    result = run_fit(out, _settings(catalogue, tiny_model), progress=False, log=logs.append)
    return SimpleNamespace(out=out, result=result, logs=logs)


def test_fit_trains_every_row_and_writes_the_report(fitted):
    r, out = fitted.result, fitted.out
    expected = [row.name for row in select_rows(method="both")]
    assert list(r.models) == expected and GUARDED in expected
    for row, model in r.models.items():
        if row != "baseline":
            assert (Path(model) / "mcip_model.json").is_file(), row
    for name in ("table1.md", "results.json", "table1.csv", "reading.md", "search.md", "run.json"):
        assert (out / "results" / name).is_file(), name
    results = json.loads((out / "results" / "results.json").read_text())
    assert [m["model"] for m in results["models"]] == expected
    i2i = {m["model"]: m["results"]["manifest_i2i"]["metrics"]["map"] for m in results["models"]}
    assert i2i["GPR-FT"] != i2i["baseline"] and i2i["MCIP"] != i2i["baseline"]  # training changed the images
    assert i2i["2SFT"] == i2i["GPR-FT"] and i2i["MCIP+Re-A"] == i2i["MCIP"]  # Re-A leaves the image side
    for row in expected:
        assert f"| {row} |" in r.table
    run = json.loads((out / "results" / "run.json").read_text())
    assert run["recommended"] == r.recommended and r.recommended in r.models
    assert (out / "index").is_dir()
    assert "mcip serve --index" in r.reading and "Recommended model" in r.reading


def test_fit_searches_the_recipe_on_val_and_reuses_the_best_trials(fitted):
    """trials=2: the image stages' study runs 1e-4 and 3e-4 (GPR-FT; MCIP then keeps GPR-FT's rate: quick
    mode searches the rate once), Re-A's 1e-4 and 1e-5; the chosen trials' models are the rows'."""
    out, models = fitted.out, fitted.result.models
    recipe = json.loads((out / "results" / "recipe.json").read_text())
    lrs = {}
    for t in recipe["trials"]:
        lrs.setdefault(t["study"], []).append(t["params"]["lr"])
    assert lrs == {"gpr": [1e-4, 3e-4], "realign": [1e-4, 1e-5]}
    chosen = {t["study"]: t for t in recipe["trials"] if t["chosen"]}
    assert Path(models["GPR-FT"]) == out / "search" / "gpr" / f"trial-{chosen['gpr']['number']:03d}" / "model"
    assert Path(models["2SFT"]).parent.parent.name == "realign"  # the first Re-A row is Re-A's search
    mcip_cfg = (Path(models["MCIP"]).parent / "config.yaml").read_text()
    assert f"lr: {chosen['gpr']['params']['lr']}" in mcip_cfg  # MCIP trained with GPR-FT's chosen rate
    for row in ("MCIP+Re-A", GUARDED):  # the later Re-A rows train with Re-A's chosen rate
        cfg = (Path(models[row]).parent / "config.yaml").read_text()
        assert f"lr: {chosen['realign']['params']['lr']}" in cfg, row
    assert (out / "results" / "recipe.md").is_file() and (out / "results" / "recipe.png").is_file()
    assert "The recipe, chosen on val" in fitted.result.reading


def test_fit_recommends_on_val_and_reads_test_once(fitted):
    out = fitted.out
    val = json.loads((out / "results" / "val" / "results.json").read_text())
    test = json.loads((out / "results" / "results.json").read_text())
    assert [m["model"] for m in val["models"]] == [m["model"] for m in test["models"]]

    order = [line for line in fitted.logs if line.startswith("[")]
    assert order.index(next(s for s in order if s.startswith("[5/7] evaluation on the val"))) < order.index(
        next(s for s in order if s.startswith("[6/7] evaluation on the test"))
    )
    assert "[val " in fitted.result.reading  # the val figure beside each test figure


def test_fit_data_step_skips_the_missing_file_and_holds_out_seen_class_val(fitted):
    data = fitted.out / "data"
    train = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (data / "val.jsonl").read_text().splitlines()]
    assert not any(r["path"].endswith("gone.png") for r in train + val)
    assert {r["label"] for r in val} <= {r["label"] for r in train}  # seen classes
    assert "lonely_one" in {r["label"] for r in train} and "lonely_one" not in {r["label"] for r in val}
    assert all(r["captions"] for r in val)  # templates give every val image captions (T2I validation)
    assert not set(r["id"] for r in train) & set(r["id"] for r in val)
    summary = next(line for line in fitted.logs if "train " in line and "val " in line)
    assert "missing files skipped: train 1" in summary and "seen classes" in summary


def test_fit_captions_cover_every_train_image_and_account_for_every_retrieved_one(fitted):
    """The tiny random model's retrieval scores are noise: every retrieved caption falls below the
    pool's noise threshold, so MCIP gets one policy, own captions + templates (written by hand: the pool
    has 5 texts, top 10 with score >= 0.2 per image; all dropped)."""
    from mcip.data.captions import read_caption_entries

    summary = json.loads((fitted.out / "captions" / "summary.json").read_text())
    assert summary["retrieved"] > 0 and summary["retrieved_kept"] == 0
    assert sum(summary["dropped"].values()) == summary["retrieved"]
    assert list(summary["files"]) == ["own+templates"] and summary["default"] == "own+templates"
    entries = read_caption_entries(fitted.out / "captions" / "own+templates.jsonl")
    train = [json.loads(line) for line in (fitted.out / "data" / "train.jsonl").read_text().splitlines()]
    assert set(entries) == {r["id"] for r in train}
    sources = {e["source"].split(":")[0] for es in entries.values() for e in es}
    assert sources == {"manifest", "template"}
    names = dict(line.split("\t") for line in (fitted.out / "data" / "names.tsv").read_text().splitlines())
    for r in train:  # every image has its class name in its template captions
        assert any(names[r["label"]] in e["text"] for e in entries[r["id"]] if e["source"] == "template")


def test_fit_evaluates_with_manifest_benchmarks_and_counts_the_corrupt_test_image(fitted):
    results = json.loads((fitted.out / "results" / "results.json").read_text())
    names = [b["name"] for b in results["benchmarks"]]
    assert names == ["manifest_i2i", "manifest_knn", "manifest_zeroshot", "captions_t2i"]
    base = results["models"][0]["results"]
    assert (
        base["manifest_i2i"]["images"] == 33 and base["manifest_i2i"]["unreadable"] == 1
    )  # counted, skipped


def test_fit_reports_equal_the_benchmarks_run_directly(fitted):
    """The table's numbers are those of ``mcip eval`` on the fit's own manifests (the starting model)."""
    from mcip.eval.benchmarks import resolve_benchmarks
    from mcip.eval.runner import evaluate_models

    data = fitted.out / "data"
    spec = f"manifest_zeroshot:manifest={data / 'eval.jsonl'},split=test,names={data / 'names.tsv'}"
    (report,) = evaluate_models([fitted.result.models["baseline"]], resolve_benchmarks(spec), data)
    results = json.loads((fitted.out / "results" / "results.json").read_text())
    ours = results["models"][0]["results"]["manifest_zeroshot"]["metrics"]
    assert report.results["manifest_zeroshot"].metrics == pytest.approx(ours)


def test_fit_resumes_and_refuses_other_settings(fitted, catalogue, tiny_model):
    logs: list[str] = []
    again = run_fit(fitted.out, _settings(catalogue, tiny_model), progress=False, log=logs.append)
    assert sum("done earlier" in line for line in logs) >= 5
    assert not any("trial" in line and "search" in line and "(lr" in line for line in logs)  # no retraining
    assert again.table == fitted.result.table
    with pytest.raises(ConfigError, match="other settings"):
        run_fit(fitted.out, _settings(catalogue, tiny_model, mc_weight=0.5), progress=False, log=logs.append)


def test_fit_refuses_a_folder_that_holds_something_else(catalogue, tiny_model, tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no mcip fit run"):
        run_fit(tmp_path, _settings(catalogue, tiny_model), progress=False, log=lambda s: None)


def test_dry_run_prints_the_plan_and_writes_nothing(catalogue, tiny_model, tmp_path, capsys):
    out = tmp_path / "planned"
    plan = plan_fit(out, _settings(catalogue, tiny_model, method="mcip+rea"))
    assert not out.exists()
    assert "MCIP+Re-A (guarded)" in plan.text and "GPR-FT" not in plan.text
    # 11 classes x 6 + the class of one; one image per class of 2+ held out for val; the missing file dropped
    assert "train 56 images / 12 classes; val 11 images / 11 classes" in plan.text
    assert "missing files skipped: train 1" in plan.text
    assert plan.estimate_seconds is not None and plan.estimate_seconds > 0
    status = main(
        [
            "fit",
            "--data",
            str(catalogue["train"]),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--dry-run",
            "--no-warmup",
            "--batch-size",
            "8",
        ]
    )
    assert status == 0 and "Rows:" in capsys.readouterr().out and not out.exists()


def test_bad_inputs_fail_before_training_with_a_message(catalogue, tiny_model, tmp_path):
    bad_names = tmp_path / "names.tsv"
    bad_names.write_text("no_such_label\tnothing\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a class of the manifest"):
        read_fit_data(_settings(catalogue, tiny_model, names=str(bad_names)))
    empty = tmp_path / "pool.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="holds no text"):
        read_fit_data(_settings(catalogue, tiny_model, pool=str(empty)))
    with Path(catalogue["test"]).open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    val = _write(tmp_path / "val.csv", [*rows[1:4], {"path": rows[5]["path"], "label": "never_trained"}])
    with pytest.raises(InputError, match="never appear in --data"):
        read_fit_data(_settings(catalogue, tiny_model, val=str(val)))
    unlabelled = _write(tmp_path / "nolabel.csv", [{"path": rows[1]["path"], "label": ""}])
    with pytest.raises(InputError, match="empty 'label'"):
        read_fit_data(_settings(catalogue, tiny_model, data=str(unlabelled)))
    with pytest.raises(InputError, match="does not exist"):
        read_fit_data(_settings(catalogue, tiny_model, data=str(tmp_path / "nope.csv")))
    with pytest.raises(ConfigError, match="--method"):
        _settings(catalogue, tiny_model, method="mcip").validate()


def _report(model: str, values: dict[str, float | None]):
    scores = {f"b_{f}": {"score": v} for f, v in values.items() if v is not None}
    missing = [f"b_{f}" for f, v in values.items() if v is None]
    return SimpleNamespace(model=model, missing=missing, notes=[], results=scores)


@pytest.mark.parametrize(
    "rows, expected",
    [
        # the best image search among the rows that keep zero-shot and T2I within 0.5 points
        ({"A": (40, 19.6, 30.0), "B": (45, 18.0, 31.0), "C": (42, 20.0, 29.6)}, "C"),
        # nothing keeps the text side: the starting model
        ({"A": (40, 10.0, 30.0), "B": (45, 18.0, 20.0)}, "baseline"),
        # equal image search (a Re-A row keeps its image stage's embeddings): the better text side
        ({"MCIP": (45, 20.0, 30.0), "MCIP+Re-A": (45, 24.0, 36.0), "C": (44, 30.0, 40.0)}, "MCIP+Re-A"),
    ],
)
def test_recommend_picks_the_best_image_search_that_keeps_text(monkeypatch, rows, expected):
    import mcip.experiment.fit.report as fit

    base = {"i2i": 35.0, "zeroshot": 20.0, "t2i": 30.0}
    table = {
        "baseline": base,
        **{k: dict(zip(("i2i", "zeroshot", "t2i"), v, strict=True)) for k, v in rows.items()},
    }
    monkeypatch.setattr(fit, "_family_averages", lambda reports, columns: table)
    reports = [SimpleNamespace(model=m, missing=[], notes=[]) for m in table]
    assert recommend(reports, []) == expected
    text = fit_reading(reports, [], expected)
    assert f"Recommended model: {expected}" in text


@pytest.mark.parametrize(
    "change, message",
    [
        ({"guard_distill_weight": -1.0}, "guard_distill_weight must be a number >= 0"),
        ({"guard_distill_weight": float("nan")}, "guard_distill_weight must be a number >= 0"),
        ({"guard_select": "i2i"}, "guard_select must be one of combined, guarded"),
        ({"guard_sides": ()}, "guard_sides must be one or both of t2i, zeroshot"),
        ({"guard_sides": ("i2i",)}, "guard_sides must be one or both of t2i, zeroshot"),
        ({"guard_sides": "zeroshot"}, "guard_sides must be one or both of t2i, zeroshot"),
    ],
)
def test_guard_settings_are_checked_before_anything_runs(change, message):
    from mcip.experiment.lab import FULL
    from mcip.experiment.rows import RunSettings

    with pytest.raises(ConfigError, match=message):
        RunSettings(**change).validate()
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(FULL, **change).validate()
    # the lab's guard as chosen on val; mcip fit keeps the MCIP row and combined
    assert (FULL.guard_distill_weight, FULL.guard_select, FULL.guard_sides) == (0.0, "guarded", ("zeroshot",))
    plain = RunSettings()
    assert (plain.guard_distill_weight, plain.guard_select, plain.guard_sides) == (
        0.0,
        "combined",
        ("t2i", "zeroshot"),
    )


def test_without_test_the_report_is_the_val_evaluation_and_says_so(catalogue, tiny_model, tmp_path):
    """No --test: the val evaluation that chose is also the report, written where the report goes."""
    out = tmp_path / "out"
    s = _settings(catalogue, tiny_model, test=None, method="2sft", trials=1, search="quick")
    result = run_fit(out, s, progress=False, log=lambda m: None)
    test = json.loads((out / "results" / "results.json").read_text())
    val = json.loads((out / "results" / "val" / "results.json").read_text())
    assert test["models"] == val["models"] and [m["model"] for m in test["models"]] == list(result.models)
    assert "The report is on the val images, which also chose" in result.reading


def test_test_images_that_copy_a_train_image_are_left_out_and_counted(catalogue, tiny_model, tmp_path):
    """A test photo with the bytes of a train photo (another name) measures memory: left out, counted."""
    with Path(catalogue["train"]).open(encoding="utf-8") as f:
        train = [r for r in csv.DictReader(f) if Path(r["path"]).is_file()]
    with Path(catalogue["test"]).open(encoding="utf-8") as f:
        tests = list(csv.DictReader(f))
    copy = tmp_path / "renamed.png"
    shutil.copy(train[3]["path"], copy)
    manifest = _write(tmp_path / "test.csv", [*tests, {"path": str(copy), "label": train[3]["label"]}])
    data = read_fit_data(_settings(catalogue, tiny_model, test=str(manifest)))
    assert data.excluded_test == 1 and len(data.test) == len(tests)
    assert str(copy) not in {str(r.path) for r in data.test}
    assert "1 test image(s) left out (copies of train/val images)" in data.summary()
