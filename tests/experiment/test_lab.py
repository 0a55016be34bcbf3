"""``mcip lab run`` end to end on a synthetic prepared lab (drawn shapes, two "vendors") with a tiny model;
the real data and encoders run in the slow test at the end (what CI's quick run checks)."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcip.eval.benchmarks import create_benchmark
from mcip.eval.benchmarks.lab import LAB_BENCHMARKS
from mcip.experiment.lab import GUARDED, ROWS, LabSettings, lab_rows, run_lab
from mcip.lab.reading import reading
from mcip.lab.subset import keep_base, write_lab_data
from tests.train.synth import COLOURS, SHAPES, draw

VENDORS = ("acme", "globex")


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def make_lab(root: Path) -> Path:
    """A prepared-lab layout: manifest.jsonl with the real fields; emoji = colour x shape, sub-category =
    shape, two vendors draw each emoji differently (their own random jitter)."""
    rng = random.Random(0)
    rows = []
    names = [(c, s) for c in COLOURS for s in SHAPES]
    for n, (colour, shape) in enumerate(names):
        split = ("train", "train", "val", "test", "train")[n % 5]
        label = f"{colour}-{shape}"
        for vendor in VENDORS:
            path = root / "images" / vendor / f"{label}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            draw(colour, shape, rng).save(path)
            rows.append(
                {
                    "path": f"images/{vendor}/{label}.png",
                    "label": label,
                    "id": f"{vendor}/{label}",
                    "captions": [f"{colour} {shape}", f"a {shape}", colour],
                    "vendor": vendor,
                    "base": label,
                    "category": "Shapes",
                    "subcategory": f"shape-{shape}",
                    "split": split,
                }
            )
    with open(root / "manifest.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return root


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    return make_lab(tmp_path_factory.mktemp("lab"))


def _settings(tiny_openclip: str) -> LabSettings:
    return LabSettings(
        base_spec=f"openclip:{tiny_openclip}",
        batch_size=4,
        num_workers=0,
        align_epochs=1,
        stage_epochs=1,
        realign_epochs=2,
        realign_patience=1,
        max_steps=2,
        wise_grid=(0.0, 0.5, 1.0),
        all_rows=True,
        align_max_steps=3,
        caption_top_k=2,
        caption_min_sim=-1.0,
        base_overrides=("optim.warmup_steps=0",),
        # the guard's own MCIP stage with the drift regulariser (the lab's default is the MCIP row's
        # stage since issue 29: tests/experiment/test_rows.py and the quick lab run cover that path)
        guard_distill_weight=3.0,
        stage_overrides=("data.batch_size=4", "stages.realign.data.batch_size=4", "loop.checkpoint_every=1"),
    )


def test_lab_benchmarks_read_the_manifest(lab_root):
    i2i = create_benchmark("lab_i2i").load(lab_root)
    assert len(i2i.images.paths) == 2 * 3 and i2i.include_self  # 3 test emoji x 2 vendors
    assert len(set(i2i.images.labels.tolist())) == 3
    r1 = create_benchmark("lab_i2i_r1").load(lab_root)
    assert not r1.include_self and r1.ks == (1, 5)
    knn = create_benchmark("lab_knn").load(lab_root)
    assert len(knn.index.paths) == 2 * 9 and knn.num_classes == 3
    zs = create_benchmark("lab_zeroshot").load(lab_root)
    assert set(zs.classnames) <= {"shape circle", "shape square", "shape triangle"}
    assert all("{}" in t for t in zs.templates)
    t2i = create_benchmark("lab_t2i").load(lab_root)
    assert t2i.match_labels and len(t2i.captions) == 3  # one CLDR label per test emoji
    for caption, row in zip(t2i.captions, t2i.caption_image, strict=True):
        assert caption.endswith(Path(t2i.images.paths[row]).stem.split("-")[1])
    val = create_benchmark("lab_i2i", split="val").load(lab_root)
    assert len(val.images.paths) == 2 * 3


def test_subset_keeps_whole_emoji_and_is_fixed(lab_root, tmp_path):
    data = write_lab_data(lab_root, tmp_path / "d", 0.5)
    rows = _jsonl(data["manifest"])
    kept = {r["base"] for r in rows}
    assert kept == {b for b in kept if keep_base(b, 0.5)} and 0 < len(kept) < 15
    assert all(sum(r["base"] == b for r in rows) == 2 for b in kept)  # both vendors of a kept emoji
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in rows)
    bare = _jsonl(data["train_no_captions"])
    assert bare and all(r["captions"] == [] for r in bare)
    again = write_lab_data(lab_root, tmp_path / "e", 0.5)
    assert Path(again["manifest"]).read_text() == Path(data["manifest"]).read_text()


def test_run_trains_every_row_and_writes_a_well_formed_report(lab_root, tiny_openclip, tmp_path):
    logs: list[str] = []
    out = tmp_path / "out"
    result = run_lab(lab_root, out, settings=_settings(tiny_openclip), progress=False, log=logs.append)
    rows = [row.name for row in lab_rows(_settings(tiny_openclip))]
    assert rows == [row.name for row in ROWS] and GUARDED in rows  # all_rows: every row
    assert list(result.models) == rows
    assert all((path / "mcip_model.json").is_file() for path in result.models.values())
    results = out / "results"
    for name in ("table1.md", "results.json", "table1.csv", "reading.md", "run.json", "search.md"):
        assert (results / name).is_file(), name
    data = json.loads((results / "results.json").read_text())
    assert [m["model"] for m in data["models"]] == rows
    by_row = {m["model"]: m for m in data["models"]}
    for row, model in by_row.items():
        for bench in LAB_BENCHMARKS:
            if row == "GPR-FT (no proj.)" and bench in ("lab_zeroshot", "lab_t2i"):
                assert bench in model["missing"]  # 32-d image features vs 16-d text: not applicable
                continue
            value = model["results"][bench]["metrics"][model["results"][bench]["table1_metric"]]
            assert 0.0 <= value <= 100.0
    # Re-A never changes image embeddings: image columns of 2SFT equal GPR-FT's
    for bench in ("lab_i2i", "lab_i2i_r1", "lab_knn"):
        assert by_row["2SFT"]["results"][bench]["metrics"] == by_row["GPR-FT"]["results"][bench]["metrics"]
        assert by_row["MCIP+Re-A"]["results"][bench]["metrics"] == by_row["MCIP"]["results"][bench]["metrics"]
    # the guarded row: WiSE-FT between the base and its MCIP stage, alpha chosen on val from the grid
    curve = json.loads((out / "runs" / "guard-wise" / "wise_curve.json").read_text())
    assert [p["alpha"] for p in curve["curve"]] == [0.0, 0.5, 1.0] and curve["select"] == "guarded"
    assert curve["chosen_alpha"] in (0.0, 0.5, 1.0) and curve["guard"] == ["zeroshot"]
    assert "zero-shot" in curve["reason"] and "T2I" not in curve["reason"]  # Re-A follows: T2I is its job
    # val zero-shot on the curve is the lab_zeroshot protocol on the val split: at alpha 0 (the base)
    # it equals that benchmark run on the base model
    from mcip.eval.benchmarks import resolve_benchmarks
    from mcip.eval.runner import evaluate_models

    [report] = evaluate_models(
        [result.models["baseline"]], resolve_benchmarks("lab_zeroshot:split=val"), out / "data"
    )
    [zs] = report.results.values()
    assert curve["curve"][0]["zeroshot_top1"] == pytest.approx(zs.metrics["top1"], abs=1e-6)
    import yaml

    guard_mcip = yaml.safe_load((out / "runs" / "guard-mcip" / "config.yaml").read_text())
    assert guard_mcip["loss"]["distill_weight"] == 3.0  # the guard's MCIP stage with the drift regulariser
    guard_rea = [
        json.loads(x) for x in (out / "runs" / "guard-rea" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("val/combined" in r for r in guard_rea)  # Re-A selected on both sides
    table = (results / "table1.md").read_text()
    assert all(name in table for name in rows) and "AVG" in table
    text = (results / "reading.md").read_text()
    assert "The paper's claims" in text and "--quick" in text
    assert "the guarded row is at least as good as the baseline in every family" in text
    search = (results / "search.md").read_text()
    assert search == result.search and search.count("| 1 |") == 3  # two text queries, one image query
    assert "text query: a happy face" in search and "image query:" in search
    from mcip.index import SearchIndex

    with SearchIndex.open(out / "index") as index:  # the test images, searchable by the best row's model
        assert len(index) == 6 and index.search(text="red circle", k=2)[0].rank == 1
    captions = _jsonl(out / "captions" / "retrieved.jsonl")
    assert captions and all(len(c["captions"]) == 2 for c in captions)
    assert any("pseudo-captions" in line for line in logs)

    # a second run reuses everything: no stage trains again, the base model comes from the lab cache
    logs.clear()
    again = run_lab(lab_root, out, settings=_settings(tiny_openclip), progress=False, log=logs.append)
    # base, captions, the stages (gpr-no-proj, gpr, 2sft, mcip, mcip-rea, guard-mcip, guard-rea), guard-wise
    assert sum("done earlier" in line for line in logs) == 1 + 1 + 7 + 1
    assert again.table == result.table

    # other settings in the same folder would silently reuse the stages: refused
    from mcip.errors import ConfigError

    other = dataclasses.replace(_settings(tiny_openclip), hard_caption_weight=0.3)
    with pytest.raises(ConfigError, match="hard_caption_weight"):
        run_lab(lab_root, out, settings=other, progress=False, log=logs.append)


def test_run_resumes_after_an_interrupted_stage(lab_root, tiny_openclip, tmp_path, monkeypatch):
    import mcip.experiment.lab as lab_run

    calls = []
    original = lab_run.LabRun.evaluate

    def fail_once(self, models, split="test"):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(lab_run.LabRun, "evaluate", fail_once)
    with pytest.raises(KeyboardInterrupt):
        run_lab(
            lab_root, tmp_path / "o", settings=_settings(tiny_openclip), progress=False, log=lambda m: None
        )
    stage_models = sorted(p.parent.name for p in (tmp_path / "o" / "runs").glob("*/model"))
    assert stage_models == [
        "2sft", "gpr", "gpr-no-proj", "guard-mcip", "guard-rea", "guard-wise", "mcip", "mcip-rea"
    ]  # fmt: skip
    shutil.rmtree(tmp_path / "o" / "runs" / "mcip-rea")  # as if the last stage had not finished
    monkeypatch.setattr(lab_run.LabRun, "evaluate", original)
    logs: list[str] = []
    run_lab(lab_root, tmp_path / "o", settings=_settings(tiny_openclip), progress=False, log=logs.append)
    assert sum("done earlier" in line for line in logs) == 1 + 1 + 7
    assert any("mcip-rea: training" in line for line in logs)  # the guard reuses the MCIP row's model


def test_reading_checks_the_claims_against_the_numbers():
    from mcip.eval.runner import BenchmarkResult, ModelReport

    def report(name, i2i, zs, t2i):
        r = ModelReport(name)
        for bench, family, value in (("i", "i2i", i2i), ("z", "zeroshot", zs), ("t", "t2i", t2i)):
            r.results[bench] = BenchmarkResult(bench, family, {"m": value}, "m", 0.0, 1, 0)
        return r

    reports = [
        report("baseline", 40, 20, 30),
        report("GPR-FT", 60, 10, 10),
        report("2SFT", 60, 18, 28),
        report("MCIP", 61, 15, 20),
        report("MCIP+Re-A", 61, 19, 31),
    ]
    text = reading(reports, [("i", "i2i"), ("z", "zeroshot"), ("t", "t2i")])
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(lines) == 6 and all("**seen**" in line for line in lines), text
    assert "| GPR-FT | 60.0 (+20.0) | 10.0 (-10.0) | 10.0 (-20.0) |" in text
    reports[1] = report("GPR-FT", 35, 25, 35)  # GPR-FT got worse at I2I and better at text
    text = reading(reports, [("i", "i2i"), ("z", "zeroshot"), ("t", "t2i")])
    assert text.count("**NOT seen**") >= 2


def test_reading_checks_the_guard_against_the_baseline():
    from mcip.eval.runner import BenchmarkResult, ModelReport

    def report(name, i2i, zs, t2i):
        r = ModelReport(name)
        for bench, family, value in (("i", "i2i", i2i), ("z", "zeroshot", zs), ("t", "t2i", t2i)):
            r.results[bench] = BenchmarkResult(bench, family, {"m": value}, "m", 0.0, 1, 0)
        return r

    cols = [("i", "i2i"), ("z", "zeroshot"), ("t", "t2i")]
    met = reading([report("baseline", 40, 20, 30), report(GUARDED, 42.5, 20, 30.1)], cols)
    guard = [line for line in met.splitlines() if line.startswith("- the guard")]
    assert len(guard) == 2 and all("**seen**" in line for line in guard), met
    assert "+2.5" in guard[1] and "(+0.0, +0.1)" in guard[1]
    short = reading([report("baseline", 40, 20, 30), report(GUARDED, 41.0, 19.6, 30.0)], cols)
    guard = [line for line in short.splitlines() if line.startswith("- the guard")]
    assert "**NOT seen**" in guard[0] and "**NOT seen**" in guard[1]  # zero-shot -0.4; I2I only +1.0
    assert "guard" not in reading([report("baseline", 40, 20, 30)], cols)


def test_cli_lab_run_help_lists_the_options(capsys):
    from mcip.cli import main

    with pytest.raises(SystemExit):
        main(["lab", "run", "--help"])
    out = capsys.readouterr().out
    assert "--quick" in out and "--out" in out and "--hard-caption-weight" in out and "--all-rows" in out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_lab_run_on_the_real_data_and_encoders(tmp_path):
    """What CI checks: `mcip lab prepare` (npm) + `mcip lab run --quick` on the real emoji and encoders;
    the outputs are well-formed, and the paper's claims that hold robustly even at this size are seen
    (:func:`_assert_robust_claims`)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (the lab data comes from npm packages)")
    from mcip.cli import main

    root = tmp_path / "lab"
    assert (
        main(["lab", "run", "--root", str(root), "--out", str(tmp_path / "out"), "--quick", "--quiet"]) == 0
    )
    results = tmp_path / "out" / "results"
    data = json.loads((results / "results.json").read_text())
    assert [m["model"] for m in data["models"]] == [row.name for row in ROWS if not row.extra]
    base = data["models"][0]["results"]
    values = [base[b]["metrics"][base[b]["table1_metric"]] for b in LAB_BENCHMARKS]
    assert all(np.isfinite(values)) and all(0 <= v <= 100 for v in values)
    assert base["lab_t2i"]["metrics"]["recall@10"] > 1.0  # the aligned base model reads text (chance ~1%)
    assert (results / "teaser.png").stat().st_size > 1000
    assert "The paper's claims" in (results / "reading.md").read_text()
    _assert_robust_claims(data)
    _fit_on_a_lab_catalogue(tmp_path, json.loads((results / "run.json").read_text())["models"]["baseline"])


def _assert_robust_claims(data: dict) -> None:
    """The paper's claims that hold on the quick lab with a margin, from the family averages in
    results.json: GPR-FT lifts image search and costs zero-shot; Re-A leaves every image column exactly as
    its image stage had it (it trains only the text tower). One run of this test (2026-12-07) printed: image
    search 40.4 -> 41.5 after GPR-FT, zero-shot 19.0 -> 15.5. Not asserted, because the quick lab (12
    GPR-FT steps, 4 Re-A epochs) does not show it robustly: T2I went UP after GPR-FT (21.8 -> 23.9) and
    2SFT's mean of zero-shot and T2I was below GPR-FT's (19.4 vs 19.7), while MCIP+Re-A's was above MCIP's
    (20.0 vs 19.7); the full lab's table shows the text side back after Re-A (docs/lab.md)."""
    models = {m["model"]: m for m in data["models"]}
    avg = {name: {f: a["value"] for f, a in m["averages"].items()} for name, m in models.items()}
    base, gpr = avg["baseline"], avg["GPR-FT"]
    assert gpr["i2i"] > base["i2i"], f"image search not up after GPR-FT: {base['i2i']} -> {gpr['i2i']}"
    assert gpr["zeroshot"] < base["zeroshot"], f"zero-shot not down: {base['zeroshot']} -> {gpr['zeroshot']}"
    for realigned, image_stage in (("2SFT", "GPR-FT"), ("MCIP+Re-A", "MCIP")):
        for name in ("lab_i2i", "lab_i2i_r1", "lab_knn"):
            got, want = models[realigned]["results"][name], models[image_stage]["results"][name]
            assert got["metrics"] == want["metrics"], (realigned, name)


def _fit_on_a_lab_catalogue(tmp_path, base: str) -> None:
    """`mcip fit` as the README shows it, on a catalogue made of the quick lab's test emoji (a CSV of path
    and label, names as labels) with the lab's aligned base model and the real encoders: the outputs exist
    and the reading recommends a row."""
    from mcip.cli import main

    rows = [json.loads(line) for line in (tmp_path / "out" / "data" / "test.jsonl").read_text().splitlines()]
    classes = sorted({r["label"] for r in rows})[:40]
    catalogue = tmp_path / "catalogue.csv"
    with catalogue.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([r["path"], r["captions"][0]] for r in rows if r["label"] in classes)
    out = tmp_path / "fit"
    args = ["fit", "--data", str(catalogue), "--model", base, "--out", str(out), "--quiet"]
    args += ["--epochs", "1", "--max-steps", "4", "--batch-size", "32", "--workers", "0"]
    args += ["--realign-epochs", "2", "--patience", "1", "--wise-grid", "0,0.5,1", "--trials", "2"]
    assert main([*args, "--dry-run"]) == 0 and not out.exists()
    assert main(args) == 0
    data = json.loads((out / "results" / "results.json").read_text())
    assert [m["model"] for m in data["models"]] == ["baseline", "MCIP", "MCIP+Re-A", GUARDED]
    assert {b["name"] for b in data["benchmarks"]} == {
        "manifest_i2i",
        "manifest_knn",
        "manifest_zeroshot",
        "captions_t2i",
    }
    reading_text = (out / "results" / "reading.md").read_text()
    assert "Recommended model:" in reading_text and "mcip serve --index" in reading_text
    assert (out / "index").is_dir()


def test_example_catalogue_script_writes_a_fit_ready_catalogue(lab_root, tmp_path):
    """examples/lab_catalogue.py (the README's "your own data" example) on a prepared lab."""
    import subprocess
    import sys

    from mcip.experiment.fit import FitSettings, read_fit_data

    script = Path(__file__).resolve().parents[2] / "examples" / "lab_catalogue.py"
    out = tmp_path / "cat"
    args = [sys.executable, str(script), str(out), "--root", str(lab_root), "--train-vendor", "acme"]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    assert "train" in done.stdout
    with (out / "train.csv").open(encoding="utf-8") as f:
        train = list(csv.DictReader(f))
    test_split = {r["label"] for r in _jsonl(lab_root / "manifest.jsonl") if r["split"] == "test"}
    assert train and {r["label"] for r in train} <= test_split
    data = read_fit_data(
        FitSettings(
            data=str(out / "train.csv"),
            val=str(out / "val.csv"),
            test=str(out / "test.csv"),
            names=str(out / "names.tsv"),
            pool=str(out / "pool.txt"),
            model="unused",
        )
    )
    assert not data.val_on_seen and data.knn  # val: other emoji; test: other drawings of the same ones
    assert data.names[train[0]["label"]] != train[0]["label"]  # the names file names every class


def test_sweep_trains_one_mcip_stage_per_variant_and_reports_val(lab_root, tiny_openclip, tmp_path):
    """mcip.experiment.sweep (examples/lab_sweep.py): each variant's setting reaches its stage's config, and the
    reported numbers are the val records of the selected step."""
    from mcip.experiment.lab import LabRun
    from mcip.experiment.sweep import format_sweep, sweep_mcip

    authors = dataclasses.replace(_settings(tiny_openclip), hard_caption_weight=0.1, mc_weight=0.25)
    lab = LabRun(lab_root, tmp_path / "out", authors, progress=False, log=lambda m: None)
    variants = [{"h": 0.0, "mc": 0.5}, {"h": 0.1, "mc": 0.25, "distill": 1.0}, {"h": 0.1, "mc": 0.25}]
    rows = sweep_mcip(lab, variants)
    assert [(r["h"], r["mc"]) for r in rows] == [(0.0, 0.5), (0.1, 0.25), (0.1, 0.25)]
    runs = tmp_path / "out" / "runs"
    assert (runs / "mcip" / "model").is_dir() and not (runs / "sweep-h0.1-mc0.25").exists()  # reused
    import yaml

    cfg = yaml.safe_load((tmp_path / "out" / "runs" / "sweep-h0-mc0.5" / "config.yaml").read_text())
    assert cfg["loss"]["hard_caption_weight"] == 0.0 and cfg["loss"]["mc_weight"] == 0.5
    assert cfg["loss"]["arc_weight"] == 0.5
    cfg = yaml.safe_load(
        (tmp_path / "out" / "runs" / "sweep-h0.1-mc0.25-distill1" / "config.yaml").read_text()
    )
    assert cfg["loss"]["distill_weight"] == 1.0
    metrics = _jsonl(tmp_path / "out" / "runs" / "sweep-h0-mc0.5" / "metrics.jsonl")
    record = next(m for m in metrics if m["step"] == rows[0]["best_step"] and "val/i2i_map" in m)
    assert rows[0]["selected"]["i2i_map"] == record["val/i2i_map"]
    assert rows[0]["start"]["combined"] == 1.0  # the start is the reference of combined
    table = format_sweep(rows)
    assert table.count("\n") == 4 and "distill" in table
