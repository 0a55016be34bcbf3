"""Validation that sees both sides: the pre-flight, ``loop.select``, ``combined``, the drift guard, and the
own-data crash (sidecar captions that leave train AND val images without captions, cached features)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import mcip
from mcip.engine.validate import Validator, combined_score
from mcip.errors import ConfigError
from mcip.losses import ArcMarginLoss
from mcip.stages.common import DriftGuard
from mcip.stages.gpr import GPRTask
from mcip.stages.resolve import load_config, plan
from mcip.stages.run import run, run_stage
from tests.train.synth import make_dataset
from tests.train.test_stages import FAST


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """train.csv without captions + a sidecar that skips every third image; val.csv (held-out classes)
    whose captions column is empty for every other image."""
    root = tmp_path_factory.mktemp("messy")
    train = make_dataset(root / "train", per_class=6)
    val = make_dataset(root / "val", per_class=6, held_out=True)
    rows = list(csv.DictReader(train.open()))
    sidecar = root / "pseudo.jsonl"
    with sidecar.open("w") as f:
        for i, row in enumerate(rows):
            if i % 3:
                f.write(json.dumps({"id": row["path"], "captions": json.loads(row["captions"])}) + "\n")
    bare = root / "train" / "bare.csv"
    _write(bare, [{"path": r["path"], "label": r["label"]} for r in rows])
    vrows = list(csv.DictReader(val.open()))
    for i, row in enumerate(vrows):
        row["captions"] = row["captions"] if i % 2 else "[]"
    _write(root / "val" / "val.csv", vrows)
    return {"train": bare, "sidecar": sidecar, "val": root / "val" / "val.csv"}


def _write(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def tiny_base(tiny_openclip, tmp_path):
    torch.manual_seed(0)
    return mcip.save_model(mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path / "base")


def _raw(spec, messy, tmp_path, *extra):
    return load_config(
        None,
        [
            f"model.spec={spec}",
            f"data.train={messy['train']}",
            f"data.captions={messy['sidecar']}",
            f"data.val={messy['val']}",
            f"out={tmp_path / 'run'}",
            f"cache_dir={tmp_path / 'cache'}",
            *FAST,
            *extra,
        ],
    )


def _val_records(run_dir):
    return [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "val/" in line
    ]


@pytest.mark.parametrize("pipeline", ["mcip+rea", "2sft"])
def test_pipelines_on_captionless_train_and_val_images(pipeline, tiny_base, messy, tmp_path):
    """The own-data crash: Re-A validated with cached val features while val was filtered to captioned
    records (IndexError: mask [274] vs tensor [258]). Both pipelines now run through."""
    results = run(_raw(tiny_base, messy, tmp_path, f"pipeline={pipeline}"), progress=False)
    assert [r.stage for r in results][-1] == "realign"
    for r in results:
        first = _val_records(r.run_dir)[0]
        assert first["step"] == 0  # the pre-flight, before any training step
        assert {"val/i2i_map", "val/t2i_r5"} <= set(first)  # both sides, every time
        assert all({"val/i2i_map", "val/t2i_r5"} <= set(v) for v in _val_records(r.run_dir))


def test_realign_with_cached_features_and_captionless_images(tiny_base, messy, tmp_path):
    raw = _raw(tiny_base, messy, tmp_path, "stage=realign")
    (cfg,) = plan(raw)
    run_stage(cfg, progress=False)  # fills the image cache
    again = run_stage(
        plan(_raw(tiny_base, messy, tmp_path / "again", "stage=realign"))[0].__class__(
            **{**cfg.__dict__, "out": str(tmp_path / "again")}
        ),
        progress=False,
    )  # reads the cached val features
    assert again.train.best_metric is not None


def test_a_broken_validation_fails_before_the_first_step(tiny_base, messy, tmp_path, monkeypatch):
    def broken(self, _task=None):
        raise RuntimeError("validation is broken")

    monkeypatch.setattr(Validator, "__call__", broken)
    (cfg,) = plan(_raw(tiny_base, messy, tmp_path, "stage=gpr"))
    with pytest.raises(RuntimeError, match="validation is broken"):
        run_stage(cfg, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()  # no step was trained


def test_select_combined_logs_the_ratio_and_may_keep_the_start(tiny_base, messy, tmp_path):
    (cfg,) = plan(_raw(tiny_base, messy, tmp_path, "stage=gpr", "loop.select=combined"))
    result = run_stage(cfg, progress=False)
    records = _val_records(result.run_dir)
    start = {k[4:]: v for k, v in records[0].items() if k.startswith("val/")}
    for r in records:  # every logged combined is the ratio to the start, recomputed here
        now = {k[4:]: v for k, v in r.items() if k.startswith("val/")}
        assert now["combined"] == pytest.approx(combined_score(now, start))
    assert records[0]["val/combined"] == pytest.approx(1.0)
    best = max(records, key=lambda r: r["val/combined"])
    assert result.train.val_metric == "combined"
    assert result.train.best_metric == pytest.approx(best["val/combined"])
    assert result.train.best_metric >= 1.0  # never worse than the start on val
    if best["step"] == 0:  # nothing beat the start: the stage returns the starting model, bitwise
        start, out = mcip.load_model(tiny_base), mcip.load_model(result.model_dir)
        for (n, a), (_, b) in zip(start.state_dict().items(), out.state_dict().items(), strict=True):
            assert torch.equal(a, b), n


def test_combined_score_by_hand():
    ref = {"i2i_map": 40.0, "t2i_r5": 20.0}
    assert combined_score({"i2i_map": 44.0, "t2i_r5": 19.0}, ref) == pytest.approx((1.1 + 0.95) / 2)
    assert combined_score({"i2i_map": 44.0}, ref) == pytest.approx(1.1)  # one side measured
    assert combined_score({"i2i_map": 2.0, "t2i_r5": 3.0}, {"i2i_map": 0.0, "t2i_r5": 0.5}) == 2.5  # floor 1


@pytest.mark.parametrize(
    "extra,match",
    [
        (("stage=realign", "loop.select=i2i"), "never changes image embeddings"),
        (("stage=gpr", "loop.select=combined", "data.val=__nocaptions__"), "captions on the val images"),
        (("stage=gpr", "loop.select=best"), "loop.select"),
    ],
)
def test_bad_select_fails_before_training(extra, match, tiny_base, messy, tmp_path):
    extra = list(extra)
    if "data.val=__nocaptions__" in extra:
        rows = list(csv.DictReader(messy["val"].open()))
        _write(
            tmp_path / "nocap.csv",
            [{"path": str(messy["val"].parent / r["path"]), "label": r["label"]} for r in rows],
        )
        extra[extra.index("data.val=__nocaptions__")] = f"data.val={tmp_path / 'nocap.csv'}"
    with pytest.raises(ConfigError, match=match):
        (cfg,) = plan(_raw(tiny_base, messy, tmp_path, *extra))
        run_stage(cfg, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_drift_guard_adds_the_weighted_cosine_distance(tiny_openclip):
    torch.manual_seed(0)
    start = mcip.load_model(f"openclip:{tiny_openclip}")
    model = mcip.load_model(f"openclip:{tiny_openclip}")
    with torch.no_grad():
        for p in model.image_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    arc = ArcMarginLoss(3, model.embed_dim)
    batch = {
        "pixels": torch.randn(4, 3, model.image_size, model.image_size),
        "labels": torch.tensor([0, 1, 2, 0]),
    }
    plain = GPRTask(model, arc)(batch)["loss"]
    out = GPRTask(model, arc, DriftGuard(start, 0.5))(batch)
    new, old = model.encode_image(batch["pixels"]), start.encode_image(batch["pixels"])
    drift = sum(1 - torch.dot(a, b).item() for a, b in zip(new, old, strict=True)) / 4  # both normalised
    assert out["drift"].item() == pytest.approx(drift, abs=1e-5)
    assert out["loss"].item() == pytest.approx(plain.item() + 0.5 * drift, abs=1e-5)
    assert drift > 0


def test_distill_weight_runs_in_a_stage_and_is_validated(tiny_base, messy, tmp_path):
    (cfg,) = plan(_raw(tiny_base, messy, tmp_path, "stage=gpr", "loss.distill_weight=1.0"))
    result = run_stage(cfg, progress=False)
    logs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("drift" in r for r in logs)
    with pytest.raises(ConfigError, match="distill_weight"):
        plan(_raw(tiny_base, messy, tmp_path, "stage=gpr", "loss.distill_weight=-1"))


# ------------------------------------------------------------------ seen-class validation
def test_split_within_classes_keeps_every_val_class_in_train():
    from mcip.data import split_within_classes
    from mcip.data.records import ImageRecord

    records = [
        ImageRecord(f"{c}{i}", f"{c}{i}.png", c) for c in "abc" for i in range({"a": 10, "b": 3, "c": 1}[c])
    ]
    train, val = split_within_classes(records, 0.2, seed=1)
    assert {r.label for r in val} <= {r.label for r in train}
    assert sum(r.label == "a" for r in val) == 2 and sum(r.label == "b" for r in val) == 1
    assert all(r.label != "c" for r in val)  # a class of one image stays in train
    assert {r.id for r in train} | {r.id for r in val} == {r.id for r in records}
    assert split_within_classes(list(reversed(records)), 0.2, seed=1)[1] == list(reversed(val))


def test_seen_class_validation_queries_the_training_images(tiny_base, messy, tmp_path):
    raw = _raw(tiny_base, messy, tmp_path, "stage=gpr", "data.val_mode=seen_classes", "data.val_fraction=0.3")
    raw["data"].pop("val")
    (cfg,) = plan(raw)
    result = run_stage(cfg, progress=False)
    first = _val_records(result.run_dir)[0]
    assert {"val/i2i_map", "val/i2i_r1", "val/t2i_r5"} <= set(first)


def test_seen_class_validator_values_equal_the_metric_on_the_embeddings(tiny_openclip, messy):
    from mcip.data import load_records, split_within_classes
    from mcip.engine.validate import encode_records
    from mcip.eval.metrics import query_gallery_average_precision

    model = mcip.load_model(f"openclip:{tiny_openclip}")
    records = load_records(messy["train"])
    train, val = split_within_classes(records, 0.3)
    validator = Validator(model, val, text=False)
    validator.set_gallery(train)
    got = validator()
    q, _ = encode_records(model, val)
    g, _ = encode_records(model, train)
    names = sorted({r.label for r in records})
    ap, hit1 = query_gallery_average_precision(
        q,
        torch.tensor([names.index(r.label) for r in val]),
        g,
        torch.tensor([names.index(r.label) for r in train]),
    )
    assert got["i2i_map"] == pytest.approx(100 * float(ap.nanmean()))
    assert got["i2i_r1"] == pytest.approx(100 * float(hit1.nanmean()))


def _val_of_trained_classes(messy, tmp_path, extra_unknown: bool = False):
    rows = list(csv.DictReader(messy["train"].open()))[::5]
    rows = [
        {"path": str(messy["train"].parent / r["path"]), "label": r["label"], "captions": "[]"} for r in rows
    ]
    if extra_unknown:
        rows.append(
            {
                "path": str(messy["val"].parent / "yellow_triangle" / "0.png"),
                "label": "never_trained",
                "captions": "[]",
            }
        )
    _write(tmp_path / "seen_val.csv", rows)
    return tmp_path / "seen_val.csv"


def test_val_sharing_classes_is_seen_under_auto_and_refused_under_unseen(tiny_base, messy, tmp_path):
    from mcip.errors import InputError

    val = _val_of_trained_classes(messy, tmp_path)
    (cfg,) = plan(_raw(tiny_base, messy, tmp_path, "stage=gpr", f"data.val={val}"))
    result = run_stage(cfg, progress=False)  # auto: seen classes
    assert "val/i2i_r1" in _val_records(result.run_dir)[0]
    (cfg,) = plan(
        _raw(tiny_base, messy, tmp_path / "u", "stage=gpr", f"data.val={val}", "data.val_mode=unseen_classes")
    )
    with pytest.raises(InputError, match="val_mode=seen_classes"):
        run_stage(cfg, progress=False)
    bad = _val_of_trained_classes(messy, tmp_path, extra_unknown=True)
    (cfg,) = plan(
        _raw(tiny_base, messy, tmp_path / "s", "stage=gpr", f"data.val={bad}", "data.val_mode=seen_classes")
    )
    with pytest.raises(InputError, match=r"never appear in data\.train"):
        run_stage(cfg, progress=False)
    (cfg,) = plan(_raw(tiny_base, messy, tmp_path / "x", "stage=gpr", "data.val_mode=sometimes"))
    with pytest.raises(ConfigError, match="val_mode"):
        run_stage(cfg, progress=False)


def test_val_captions_are_capped_round_robin():
    from mcip.engine.validate import _round_robin

    caps = [["a1", "a2", "a3"], [], ["c1"], ["d1", "d2"]]
    assert _round_robin(caps, 10) == [(0, "a1"), (0, "a2"), (0, "a3"), (2, "c1"), (3, "d1"), (3, "d2")]
    assert _round_robin(caps, 4) == [(0, "a1"), (0, "a2"), (2, "c1"), (3, "d1")]  # firsts before seconds


@pytest.mark.parametrize("name", ["composed", "openclip"])
def test_realign_validation_on_cached_val_text_states_equals_the_full_tower(
    name, model_specs, messy, tmp_path
):
    """Re-A's validator with the val captions' lower-block states cached gives the T2I of the full text
    tower, before and after the unlocked block moves (as in training), without running the lower blocks
    again; the val captions of images without captions or unreadable stay out as before."""
    from mcip.data import load_records
    from mcip.engine.validate import encode_records
    from mcip.models import unlock_last_text_blocks
    from mcip.stages.text_cache import cache_val_text_hidden

    kwargs = dict(model_specs[name])
    torch.manual_seed(0)
    model = mcip.load_model(kwargs.pop("spec"), **kwargs)
    unlock_last_text_blocks(model, 1)
    import dataclasses

    val = load_records(messy["val"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")  # unreadable, but captioned: its captions must stay out
    val.insert(1, dataclasses.replace(val[1], id="broken", path=broken, captions=("a broken caption",)))
    images, rows = encode_records(model, val)
    assert 1 not in rows.tolist()
    cache = torch.full((len(val), images.shape[1]), float("nan"))
    cache[rows] = images
    full = Validator(model, val, image_cache=cache.numpy())
    cached = Validator(model, val, image_cache=cache.numpy())
    cache_val_text_hidden(cached, 1, tmp_path / "cache")
    assert cached.text_hidden is not None and len(cached.text_hidden) == len(cached.texts) > 0
    below = model.text_hidden_below
    calls = []
    model.text_hidden_below = lambda *a, **k: calls.append(1) or below(*a, **k)
    texts = [c for _, c in cached.texts]
    for _ in range(2):
        model.eval()
        with torch.no_grad():  # the embeddings themselves, not only the coarse recalls
            expected = model.encode_text(texts)
            assert torch.allclose(
                cached.text_hidden.encode(model, list(range(len(texts)))), expected, atol=1e-5
            )
        want, got = full(), cached()
        assert {k: got[k] for k in want if k.startswith("t2i")} == pytest.approx(
            {k: want[k] for k in want if k.startswith("t2i")}, abs=1e-9
        )
        with torch.no_grad():  # move the unlocked block and the projector, as a training step would
            last = model.text_block_prefixes()[-1]
            for n, p in model.net.named_parameters():
                if n.startswith(last + ".") or model.part_of(n) == "text_projector":
                    p.add_(0.05 * torch.randn_like(p))
    assert not calls  # the frozen lower blocks never ran again
