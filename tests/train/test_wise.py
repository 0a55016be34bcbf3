"""WiSE-FT alpha chosen on val (mcip.wise.curve), `mcip merge`, and the pipelines' wise step."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import mcip
from mcip.cli import main
from mcip.engine.validate import Validator, encode_records
from mcip.errors import ConfigError, InputError
from mcip.eval.protocols import evaluate_zeroshot, zeroshot_classifier
from mcip.models import IMAGE_PARTS
from mcip.stages.resolve import load_config, plan
from mcip.stages.run import run
from mcip.wise.curve import wise_curve, write_curve
from mcip.wise.select import check_grid, check_guard, check_tolerance, choose_alpha, parse_alpha
from tests.train.synth import make_dataset
from tests.train.test_stages import FAST


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("wise")
    return {
        "train": make_dataset(root / "train", per_class=6),
        "val": make_dataset(root / "val", per_class=4, held_out=True),
    }


@pytest.fixture(scope="module")
def models(tiny_openclip, tmp_path_factory):
    """A saved tiny base model and a 'fine-tuned' copy whose image side moved (text side bitwise equal)."""
    root = tmp_path_factory.mktemp("wise_models")
    torch.manual_seed(0)
    start = mcip.load_model(f"openclip:{tiny_openclip}")
    tuned = copy.deepcopy(start)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in tuned.net.named_parameters():
            if tuned.part_of(name) in IMAGE_PARTS:
                p.add_(0.3 * p.abs().mean() * torch.randn(p.shape, generator=g))
    return {
        "start": mcip.save_model(start, root / "start"),
        "tuned": mcip.save_model(tuned, root / "tuned"),
    }


def _load(models):
    return mcip.load_model(models["start"]), mcip.load_model(models["tuned"])


def _validate(model, val):
    v = Validator(model, val)
    return v()


def test_the_curve_holds_each_alpha_validated_like_a_stage(models, data, tmp_path):
    start, tuned = _load(models)
    val = mcip.data.load_records(data["val"])
    curve = wise_curve(start, tuned, val, grid=(1.0, 0.5))  # 0 is added, the grid sorted
    assert [p["alpha"] for p in curve.points] == [0.0, 0.5, 1.0]
    for alpha, model in ((0.0, start), (1.0, tuned)):
        expected = _validate(model, val)
        point = curve.at(alpha)
        for key in ("i2i_map", "t2i_r1", "t2i_r5", "t2i_r10"):
            assert point[key] == pytest.approx(expected[key], abs=1e-4), (alpha, key)
    ref = curve.points[0]
    for p in curve.points:  # combined = mean of I2I mAP and T2I R@5, each relative to alpha 0
        by_hand = (p["i2i_map"] / max(ref["i2i_map"], 1) + p["t2i_r5"] / max(ref["t2i_r5"], 1)) / 2
        assert p["combined"] == pytest.approx(by_hand)
    assert curve.points[0]["combined"] == pytest.approx(1.0)
    best = max(p["combined"] for p in curve.points)
    assert curve.at(curve.alpha)["combined"] == best
    assert curve.alpha == min(p["alpha"] for p in curve.points if p["combined"] == best)
    assert curve.parts == IMAGE_PARTS and "highest combined" in curve.reason

    files = write_curve(curve, tmp_path / "out")
    saved = json.loads(files["json"].read_text())
    assert saved["chosen_alpha"] == curve.alpha and saved["select"] == "combined"
    assert [p["alpha"] for p in saved["curve"]] == [0.0, 0.5, 1.0]
    assert {"alpha", "i2i_map", "t2i_r5", "t2i_r1", "t2i_r10", "combined"} <= set(saved["curve"][0])
    assert files["plot"].stat().st_size > 0


def test_a_merge_that_moves_the_text_side_revalidates_text_at_each_alpha(models, data):
    start = mcip.load_model(models["start"])
    tuned = copy.deepcopy(start)
    with torch.no_grad():
        for name, p in tuned.net.named_parameters():
            if tuned.part_of(name) in ("image_projector", "text_projector"):
                p.mul_(-1.0)
    val = mcip.data.load_records(data["val"])
    curve = wise_curve(start, tuned, val, grid=(1.0,))
    assert curve.parts == ("image_projector", "text_projector")
    for alpha, model in ((0.0, start), (1.0, tuned)):
        expected = _validate(model, val)
        assert curve.at(alpha)["t2i_r5"] == pytest.approx(expected["t2i_r5"], abs=1e-4)


def test_val_images_are_decoded_once_and_encoded_like_encode_records(models, data, tmp_path):
    from mcip.data import ImageRecord
    from mcip.wise.encode import FrozenText, ValImages

    model = mcip.load_model(models["start"])
    val = mcip.data.load_records(data["val"])[:6]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    val.insert(2, ImageRecord("broken", broken, val[0].label))
    expected, rows = encode_records(model, val)
    kept = ValImages(model, val, batch_size=4)
    assert kept.pixels is None  # decoded at the first encode (not at all when a frozen stem serves)
    torch.testing.assert_close(kept.encode(model)[0], expected, atol=1e-5, rtol=0)
    assert kept.pixels is not None and kept.rows.tolist() == rows.tolist() == [0, 1, 3, 4, 5, 6]
    pixels = kept.pixels
    torch.testing.assert_close(kept.encode(model)[0], expected, atol=1e-5, rtol=0)
    assert kept.pixels is pixels  # not decoded again
    fallback = ValImages(model, val, budget=0)  # over the memory budget: decoded at every alpha
    assert fallback.pixels is None and torch.equal(fallback.encode(model)[1], rows)
    calls = []
    view = FrozenText(model)
    original = model.encode_text
    model.encode_text = lambda texts, normalize=True: calls.append(1) or original(texts, normalize)
    first, again = view.encode_text(["a circle", "a square"]), view.encode_text(["a circle", "a square"])
    assert torch.equal(first, again) and len(calls) == 1 and view.embed_dim == model.embed_dim


def test_seen_class_validation_queries_the_training_gallery(models, data, tmp_path):
    start, tuned = _load(models)
    gallery = mcip.data.load_records(data["train"])
    val = mcip.data.load_records(make_dataset(tmp_path / "seen", per_class=2, seed=5))  # same classes
    curve = wise_curve(start, tuned, val, grid=(1.0,), gallery=gallery)
    for alpha, model in ((0.0, start), (1.0, tuned)):
        validator = Validator(model, val)
        validator.set_gallery(gallery)
        expected = validator()
        for key in ("i2i_map", "i2i_r1", "t2i_r5"):
            assert curve.at(alpha)[key] == pytest.approx(expected[key], abs=1e-4), (alpha, key)


def test_select_i2i_picks_the_best_val_i2i(models, data):
    start, tuned = _load(models)
    val = mcip.data.load_records(data["val"])
    curve = wise_curve(start, tuned, val, grid=(0.5, 1.0), select="i2i")
    assert curve.metric == "i2i_map"
    assert curve.at(curve.alpha)["i2i_map"] == max(p["i2i_map"] for p in curve.points)


def test_zero_shot_top1_with_class_names(models, data):
    start, tuned = _load(models)
    val = mcip.data.load_records(data["val"])
    names = {label: label.replace("_", " ") + " shape" for label in {r.label for r in val}}
    curve = wise_curve(start, tuned, val, grid=(1.0,), names=names)
    classes = sorted(names)
    emb, rows = encode_records(start, val)
    classifier = zeroshot_classifier(start, [names[c] for c in classes], ["a photo of a {}."])
    labels = torch.tensor([classes.index(val[i].label) for i in rows.tolist()])
    expected = evaluate_zeroshot(emb, labels, classifier)["top1"]
    assert curve.points[0]["zeroshot_top1"] == pytest.approx(expected)


def test_zero_shot_classes_are_the_distinct_names(models, data):
    """Labels sharing a name are one zero-shot class (the lab's emoji of one sub-category): the
    classifier has one row per distinct name and an image is right when its label's name wins."""
    start, tuned = _load(models)
    val = mcip.data.load_records(data["val"])
    labels = sorted({r.label for r in val})
    names = {label: ("round things" if i % 2 else "square things") for i, label in enumerate(labels)}
    curve = wise_curve(start, tuned, val, grid=(1.0,), names=names)
    emb, rows = encode_records(start, val)
    groups = ["round things", "square things"]
    classifier = zeroshot_classifier(start, groups, ["a photo of a {}."])
    truth = torch.tensor([groups.index(names[val[i].label]) for i in rows.tolist()])
    correct = [
        int((emb[k] @ classifier.T).argmax()) == int(truth[k]) for k in range(len(rows))
    ]  # a naive loop
    assert classifier.shape[0] == 2
    assert curve.points[0]["zeroshot_top1"] == pytest.approx(100 * sum(correct) / len(correct))


def _point(alpha, i2i, t2i, zs=None):
    p = {"alpha": alpha, "i2i_map": i2i, "t2i_r5": t2i}
    return p if zs is None else {**p, "zeroshot_top1": zs}


def _naive_guarded(points, tol, sides=("t2i", "zeroshot")):
    start, best = points[0], points[0]
    for p in points:
        kept = p["t2i_r5"] >= start["t2i_r5"] - tol if "t2i" in sides else True
        if "zeroshot_top1" in start and "zeroshot" in sides:
            kept = kept and p["zeroshot_top1"] >= start["zeroshot_top1"] - tol
        if kept and p["i2i_map"] > best["i2i_map"]:
            best = p
    return best["alpha"]


@pytest.mark.parametrize("seed", range(20))
def test_guarded_picks_the_best_i2i_that_keeps_the_text_side(seed):
    g = torch.Generator().manual_seed(seed)
    n = 9
    i2i, t2i, zs = (torch.rand(3, n, generator=g) * 4 + 30).tolist()
    with_zs = seed % 2 == 0
    points = [_point(a / 8, i2i[a], t2i[a], zs[a] if with_zs else None) for a in range(n)]
    for tol in (0.0, 0.5, 2.0):
        alpha, reason = choose_alpha(points, "i2i_map", "guarded", tol)
        assert alpha == _naive_guarded(points, tol)
        assert f"within {tol:g} points" in reason and ("zero-shot" in reason) == with_zs


@pytest.mark.parametrize("seed", range(10))
def test_a_zero_shot_guard_lets_an_alpha_give_up_text_search(seed):
    """guard=("zeroshot",): what a merge followed by Re-A holds; T2I may drop (Re-A re-aligns it)."""
    g = torch.Generator().manual_seed(seed)
    i2i, t2i, zs = (torch.rand(3, 9, generator=g) * 4 + 30).tolist()
    points = [_point(a / 8, i2i[a], t2i[a], zs[a]) for a in range(9)]
    for tol in (0.0, 0.5, 2.0):
        alpha, reason = choose_alpha(points, "i2i_map", "guarded", tol, ("zeroshot",))
        assert alpha == _naive_guarded(points, tol, ("zeroshot",))
        assert "zero-shot" in reason and "T2I" not in reason
        assert choose_alpha(points, "i2i_map", "guarded", tol, ("t2i",))[0] == _naive_guarded(
            points, tol, ("t2i",)
        )


def test_the_guard_names_its_sides_and_needs_data_for_them():
    points = [_point(0, 30, 40, 20), _point(0.5, 35, 30, 20), _point(1, 38, 20, 19.6)]
    assert choose_alpha(points, "i2i_map", "guarded", 0.5)[0] == 0  # T2I held: every merge drops it
    assert choose_alpha(points, "i2i_map", "guarded", 0.5, ("zeroshot",))[0] == 1  # zero-shot within 0.4
    assert check_guard("zeroshot, T2I") == ("t2i", "zeroshot") and check_guard(["t2i"]) == ("t2i",)
    for bad in ("", (), "i2i", ["t2i", "knn"]):
        with pytest.raises(ConfigError, match=r"one or both, e\.g\. t2i,zeroshot"):
            check_guard(bad)
    no_names = [_point(0, 30, 40), _point(1, 38, 20)]
    with pytest.raises(InputError, match="give class names"):
        choose_alpha(no_names, "i2i_map", "guarded", 0.5, ("zeroshot",))


def test_a_zero_shot_guard_without_names_fails_before_any_merging(models, data, tmp_path, monkeypatch):
    import mcip.wise.curve as wise
    import mcip.wise.merge as wise_merge_module

    monkeypatch.setattr(wise, "plan_merge", lambda *a, **k: pytest.fail("merged before checking names"))
    monkeypatch.setattr(
        wise_merge_module, "_load", lambda *a, **k: pytest.fail("loaded before checking names")
    )
    start, tuned = _load(models)
    val = mcip.data.load_records(data["val"])
    with pytest.raises(ConfigError, match="needs class names"):
        wise_curve(start, tuned, val, select="guarded", guard=("zeroshot",))
    with pytest.raises(ConfigError, match="needs class names"):
        wise_merge_module.wise_merge(
            models["start"], models["tuned"], tmp_path / "m", "auto", val, select="guarded", guard="zeroshot"
        )


def test_guarded_keeps_the_start_when_every_merge_costs_text():
    points = [_point(0, 30, 40, 20), _point(0.5, 35, 39, 20), _point(1, 38, 40, 19)]
    assert choose_alpha(points, "i2i_map", "guarded", 0.5)[0] == 0
    assert choose_alpha(points, "i2i_map", "guarded", 1.0)[0] == 1  # both within a point
    assert choose_alpha(points, "i2i_map", "i2i")[0] == 1


def test_guarded_selection_on_a_real_curve(models, data):
    start, tuned = _load(models)
    val = mcip.data.load_records(data["val"])
    names = {label: label.replace("_", " ") for label in {r.label for r in val}}
    curve = wise_curve(start, tuned, val, grid=(0.5, 1.0), names=names, select="guarded", tolerance=1.0)
    assert curve.metric == "i2i_map" and curve.info["tolerance"] == 1.0
    assert curve.alpha == _naive_guarded(curve.points, 1.0)
    with pytest.raises(ConfigError, match="tolerance"):
        wise_curve(start, tuned, val, grid=(1.0,), select="guarded", tolerance=-1)
    for bad in (-0.1, math.nan, "x", math.inf):
        with pytest.raises(ConfigError, match="tolerance must be a number of points >= 0"):
            check_tolerance(bad)


def test_bad_validation_data_fails_before_any_merging(models, data, tmp_path, monkeypatch):
    import mcip.wise.curve as wise

    monkeypatch.setattr(wise, "plan_merge", lambda *a, **k: pytest.fail("merged before checking val"))
    start, tuned = _load(models)
    with pytest.raises(InputError, match=r"no validation|there are none"):
        wise_curve(start, tuned, [])
    bare = [r.__class__(r.id, r.path, r.label) for r in mcip.data.load_records(data["val"])]
    with pytest.raises(ConfigError, match=r"needs captions.*select=i2i"):
        wise_curve(start, tuned, bare, select="combined")
    with pytest.raises(ConfigError, match="select must be one of"):
        wise_curve(start, tuned, bare, select="best")
    with pytest.raises(ConfigError, match=r"select=guarded needs captions"):
        wise_curve(start, tuned, bare, select="guarded")


@pytest.mark.parametrize("grid", [(0.5, 1.5), (math.nan,), ()])
def test_bad_grids_and_alphas_are_refused(grid):
    with pytest.raises(ConfigError):
        check_grid(grid)
    assert parse_alpha("auto") == "auto" and parse_alpha("0.25") == 0.25
    with pytest.raises(ConfigError, match="'auto' or a number"):
        parse_alpha("half")


# ------------------------------------------------------------------ mcip merge
def test_cli_auto_without_val_exits_2_before_loading_models(models, tmp_path, capsys, monkeypatch):
    import mcip.wise.merge as wise_merge

    monkeypatch.setattr(wise_merge, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    code = main(
        ["merge", str(models["start"]), str(models["tuned"]), "--alpha", "auto", "--out", str(tmp_path)]
    )
    assert code == 2 and "--val" in capsys.readouterr().err
    code = main(
        ["merge", str(models["start"]), str(models["tuned"]), "--alpha", "1.5", "--out", str(tmp_path)]
    )
    assert code == 2 and "[0, 1]" in capsys.readouterr().err


def test_cli_merge_auto_writes_the_model_and_the_curve(models, data, tmp_path, capsys):
    out = tmp_path / "merged"
    argv = ["merge", str(models["start"]), str(models["tuned"]), "--alpha", "auto", "--out", str(out)]
    assert main([*argv, "--val", str(data["val"]), "--grid", "0,0.5,1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "WiSE-FT: alpha" in printed and "(start)" in printed and "fine-tuned" in printed
    meta = json.loads((out / "mcip_model.json").read_text())["extra"]["wise"]
    curve = json.loads((out / "wise_curve.json").read_text())
    assert meta["alpha"] == curve["chosen_alpha"] and meta["parts"] == list(IMAGE_PARTS)
    assert meta["start"] == str(models["start"]) and meta["finetuned"] == str(models["tuned"])
    assert (out / "wise_curve.png").is_file()
    start, tuned = _load(models)
    merged = mcip.load_model(out)
    a = curve["chosen_alpha"]
    s, f = start.net.state_dict(), tuned.net.state_dict()
    for name, m in merged.net.state_dict().items():
        if m.is_floating_point():
            assert torch.equal(m, ((1 - a) * s[name].double() + a * f[name].double()).to(m.dtype)), name


def test_cli_merge_guarded_with_names_and_tolerance(models, data, tmp_path, capsys):
    val = mcip.data.load_records(data["val"])
    names = tmp_path / "names.tsv"
    names.write_text("".join(f"{r}\t{r.replace('_', ' ')}\n" for r in sorted({r.label for r in val})))
    out = tmp_path / "guarded"
    argv = ["merge", str(models["start"]), str(models["tuned"]), "--alpha", "auto", "--out", str(out)]
    argv += ["--val", str(data["val"]), "--grid", "0,0.5,1", "--select", "guarded", "--names", str(names)]
    assert main([*argv, "--tolerance", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "selected by guarded" in printed and "within 2 points" in printed
    curve = json.loads((out / "wise_curve.json").read_text())
    assert curve["select"] == "guarded" and curve["tolerance"] == 2
    assert all("zeroshot_top1" in p for p in curve["curve"])
    assert curve["chosen_alpha"] == _naive_guarded(curve["curve"], 2.0)
    assert main([*argv, "--tolerance", "-1", "--quiet"]) == 2
    assert "tolerance" in capsys.readouterr().err
    assert main([*argv, "--tolerance", "2", "--guard", "zeroshot", "--quiet"]) == 0
    curve = json.loads((out / "wise_curve.json").read_text())
    assert curve["guard"] == ["zeroshot"] and "T2I" not in curve["reason"]
    assert curve["chosen_alpha"] == _naive_guarded(curve["curve"], 2.0, ("zeroshot",))
    assert main([*argv, "--guard", "knn", "--quiet"]) == 2
    assert "t2i,zeroshot" in capsys.readouterr().err


def test_cli_merge_guarded_on_messy_val_data(models, data, tmp_path, capsys):
    """The user's path on messy val data: captions on some rows only, an unreadable image, a class of one
    image with a non-ASCII name, a names file without every label."""
    import csv
    import shutil

    root = tmp_path / "messy"
    shutil.copytree(data["val"].parent, root)
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    for k, row in enumerate(rows):
        if k % 2:
            row["captions"] = ""
    (root / "broken.png").write_bytes(b"not an image")
    rows.append({"path": "broken.png", "label": rows[0]["label"], "captions": '["a broken file"]'})
    shutil.copy(root / rows[1]["path"], root / "einzeln.png")
    rows.append({"path": "einzeln.png", "label": "einzelstück", "captions": ""})
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "captions"])
        writer.writeheader()
        writer.writerows(rows)
    names = tmp_path / "names.tsv"
    names.write_text(f"einzelstück\tEinzelstück ü\n{rows[0]['label']}\tfirst shape\n", encoding="utf-8")
    out = tmp_path / "merged"
    argv = ["merge", str(models["start"]), str(models["tuned"]), "--alpha", "auto", "--out", str(out)]
    argv += ["--val", str(root / "manifest.csv"), "--grid", "0,1", "--select", "guarded"]
    assert main([*argv, "--names", str(names), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "selected by guarded" in printed
    curve = json.loads((out / "wise_curve.json").read_text())
    assert curve["val_images"] == len(rows) and curve["val_captioned"] == sum(
        bool(r["captions"]) for r in rows
    )
    assert all(math.isfinite(p["zeroshot_top1"]) and math.isfinite(p["t2i_r5"]) for p in curve["curve"])
    assert curve["chosen_alpha"] == _naive_guarded(curve["curve"], 0.5)


def test_cli_merge_fixed_alpha_without_val(models, tmp_path, capsys):
    out = tmp_path / "half"
    argv = ["merge", str(models["start"]), str(models["tuned"]), "--alpha", "0.5", "--out", str(out)]
    assert main([*argv, "--parts", "image_projector"]) == 0
    assert "alpha 0.5 (given" in capsys.readouterr().out
    meta = json.loads((out / "mcip_model.json").read_text())["extra"]["wise"]
    assert meta["parts"] == ["image_projector"] and not (out / "wise_curve.json").exists()


# ------------------------------------------------------------------ the pipeline step
def _raw(models, data, tmp_path, pipeline="mcip+wise+rea", *extra):
    return load_config(
        None,
        [
            f"pipeline={pipeline}",
            f"model.spec={models['start']}",
            f"data.train={data['train']}",
            f"data.val={data['val']}",
            f"out={tmp_path / 'run'}",
            f"cache_dir={tmp_path / 'cache'}",
            "wise.grid=[0, 0.5, 1]",
            *FAST,
            *extra,
        ],
    )


def test_mcip_wise_rea_runs_end_to_end_and_resumes(models, data, tmp_path):
    results = run(_raw(models, data, tmp_path), progress=False)
    assert [r.stage for r in results] == ["mcip", "wise", "realign"]
    wise_dir = tmp_path / "run" / "02-wise"
    assert results[1].model_dir == wise_dir / "model" and (wise_dir / "wise_curve.json").is_file()
    curve = json.loads((wise_dir / "wise_curve.json").read_text())
    a = results[1].train.final_metrics["alpha"]
    assert a == curve["chosen_alpha"] and results[1].train.val_metric == "combined"
    start, tuned = _load({"start": models["start"], "tuned": results[0].model_dir})
    merged, rea = mcip.load_model(results[1].model_dir), mcip.load_model(results[2].model_dir)
    s, f, m, r = (x.net.state_dict() for x in (start, tuned, merged, rea))
    for name in m:
        if merged.part_of(name) in IMAGE_PARTS:
            assert torch.equal(m[name], ((1 - a) * s[name].double() + a * f[name].double()).to(m[name].dtype))
            assert torch.equal(r[name], m[name]), name  # Re-A starts from the merged image tower
    again = run(load_config(tmp_path / "run" / "config.yaml"), resume=True, progress=False)
    assert [r.stage for r in again] == ["mcip", "wise", "realign"] and all(r.train is None for r in again)


def test_mcip_train_prints_the_wise_steps_alpha(tmp_path, capsys, monkeypatch):
    import mcip.stages.run as stages
    from mcip.engine.result import TrainResult
    from mcip.stages.run import StageResult

    done = TrainResult(0, 0, 1.5, 1.04, None, {"alpha": 0.3}, 0, tmp_path, None, None, val_metric="combined")
    fake = [StageResult("wise", tmp_path, tmp_path / "model", done)]
    monkeypatch.setattr(stages, "run", lambda *a, **k: fake)
    assert main(["train", "--set", "pipeline=mcip+wise+rea"]) == 0
    assert "alpha 0.3 (1.04)" in capsys.readouterr().out


def test_pipeline_checks_the_wise_step_before_the_first_stage_trains(models, data, tmp_path, monkeypatch):
    import mcip.stages.run as stages

    monkeypatch.setattr(stages, "run_stage", lambda *a, **k: pytest.fail("a stage trained first"))
    bare = data["val"].parent / "bare.csv"  # the val images without captions
    lines = data["val"].read_text().splitlines()
    bare.write_text("path,label\n" + "\n".join(",".join(x.split(",")[:2]) for x in lines[1:]) + "\n")
    raw = _raw(models, data, tmp_path, "mcip+wise+rea", f"data.val={bare}")
    with pytest.raises(ConfigError, match="needs captions"):
        run(raw, progress=False)
    raw = _raw(models, data, tmp_path, "mcip+wise+rea", "wise.select=guarded", "wise.guard=[zeroshot]")
    with pytest.raises(ConfigError, match="needs class names"):  # a zero-shot guard without wise.names
        run(raw, progress=False)


def test_a_random_weight_spec_is_rebuilt_with_the_first_stages_seed(tiny_openclip, data, tmp_path):
    raw = _raw({"start": f"openclip:{tiny_openclip}"}, data, tmp_path, "mcip+wise")  # random weights
    results = run(raw, progress=False)
    assert [r.stage for r in results] == ["mcip", "wise"]  # the start was rebuilt bitwise (checked)


def test_pipeline_refuses_a_start_that_does_not_reload(tiny_openclip, data, tmp_path, monkeypatch):
    import mcip.stages.wise_step as wise_step

    monkeypatch.setattr(wise_step, "seed_everything", lambda seed: torch.manual_seed(seed + 1))
    raw = _raw({"start": f"openclip:{tiny_openclip}"}, data, tmp_path, "mcip+wise")
    with pytest.raises(ConfigError, match=r"does not reload.*mcip save"):
        run(raw, progress=False)


def test_wise_alone_and_bad_wise_settings_are_refused():
    base = ["out=o", "data.train=t", "model.spec=m"]
    with pytest.raises(ConfigError, match="mcip\\+wise\\+rea"):
        plan(load_config(None, ["stage=wise", *base]))
    with pytest.raises(ConfigError, match="Valid keys: alpha, grid, select"):
        plan(load_config(None, ["pipeline=mcip+wise+rea", *base, "wise.alfa=0.5"]))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        plan(load_config(None, ["pipeline=mcip+wise+rea", *base, "wise.alpha=1.5"]))
    _, wise_cfg, rea = plan(load_config(None, ["pipeline=mcip+wise+rea", *base, "wise.alpha=0.4"]))
    assert wise_cfg.stage == "wise" and wise_cfg.wise.alpha == 0.4 and rea.stage == "realign"
    guarded = ["pipeline=mcip+wise+rea", *base, "wise.select=guarded", "wise.tolerance=1"]
    _, wise_cfg, _ = plan(load_config(None, guarded))
    assert wise_cfg.wise.select == "guarded" and wise_cfg.wise.tolerance == 1
    with pytest.raises(ConfigError, match="tolerance"):
        plan(load_config(None, [*guarded, "wise.tolerance=-2"]))
    _, wise_cfg, _ = plan(load_config(None, [*guarded, "wise.guard=[zeroshot]"]))
    assert wise_cfg.wise.guard == ("zeroshot",)
    with pytest.raises(ConfigError, match=r"one or both, e\.g\. t2i,zeroshot"):
        plan(load_config(None, [*guarded, "wise.guard=[knn]"]))
