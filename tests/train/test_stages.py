"""Each stage trains exactly the parts it should, on tiny random models and synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mcip
from mcip.engine.validate import encode_records
from mcip.stages.resolve import load_config, plan
from mcip.stages.run import run, run_stage
from tests.train.synth import HELD_OUT, make_dataset

FAST = [
    "loop.max_steps=3",
    "loop.epochs=1",
    "loop.log_every=1",
    "loop.checkpoint_every=2",
    "loop.precision=fp32",
    "data.batch_size=8",
    "data.num_workers=0",
    "data.val_fraction=0.25",
    "optim.lr=1e-3",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth"), per_class=6)


def _config(stage, spec, synth, tmp_path, *extra):
    raw = load_config(
        None,
        [
            f"stage={stage}",
            f"model.spec={spec}",
            f"data.train={synth}",
            f"out={tmp_path / stage}",
            f"cache_dir={tmp_path / 'cache'}",
            *FAST,
            *extra,
        ],
    )
    (cfg,) = plan(raw)
    return cfg


def _states(model):
    return {n: p.detach().clone() for n, p in model.net.state_dict().items()}


def _changed(before, model):
    after = model.net.state_dict()
    return {n for n in before if not torch.equal(before[n], after[n])}


def _part_names(model, parts):
    return {n for n, _ in model.net.named_parameters() if model.part_of(n) in parts}


@pytest.mark.parametrize("stage", ["gpr", "mcip"])
def test_image_stages_train_only_the_image_side(stage, tiny_openclip, synth, tmp_path):
    spec = f"openclip:{tiny_openclip}"
    torch.manual_seed(0)
    base = mcip.save_model(mcip.load_model(spec), tmp_path / "base")
    before = _states(mcip.load_model(base))
    result = run_stage(_config(stage, base, synth, tmp_path), progress=False)
    trained = mcip.load_model(result.model_dir)
    changed = _changed(before, trained)
    image = _part_names(trained, {"image_encoder", "image_projector"})
    assert changed <= image | {n for n in before if "running" in n}
    assert len(changed & image) > 0.8 * len(image)  # nearly every image tensor moved
    assert result.train.steps == 3
    assert result.train.best_metric is not None  # a run ending mid-epoch (max_steps) is validated at its end
    assert "Best validation i2i_map" in result.train.summary()
    run_dir = result.run_dir
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert json.loads((result.model_dir / "mcip_model.json").read_text())["extra"]["stage"] == stage


@pytest.mark.parametrize("stage", ["gpr", "mcip"])
def test_image_stages_keep_the_frozen_image_groups(stage, tiny_openclip, synth, tmp_path):
    """``freeze_image_groups=2``: the tiny ViT's stem and first block keep their weights bitwise; the last
    block, the final norm and the projector train."""
    torch.manual_seed(0)
    base = mcip.save_model(mcip.load_model(f"openclip:{tiny_openclip}"), tmp_path / "base")
    before = _states(mcip.load_model(base))
    cfg = _config(stage, base, synth, tmp_path, "freeze_image_groups=2")
    trained = mcip.load_model(run_stage(cfg, progress=False).model_dir)
    changed = _changed(before, trained)
    frozen = ("visual.class_embedding", "visual.positional_embedding", "visual.conv1.", "visual.ln_pre.")
    frozen += ("visual.transformer.resblocks.0.",)
    assert not {n for n in changed if n.startswith(frozen)}
    last = {n for n in before if n.startswith(("visual.transformer.resblocks.1.", "visual.ln_post."))}
    assert len(changed & last) > 0.8 * len(last) and "visual.proj" in changed


def test_realign_trains_only_the_unlocked_text_side_and_keeps_image_embeddings(
    tiny_openclip, synth, tmp_path
):
    torch.manual_seed(0)
    base_model = mcip.load_model(f"openclip:{tiny_openclip}")
    base = mcip.save_model(base_model, tmp_path / "base")
    before = _states(base_model)
    result = run_stage(_config("realign", base, synth, tmp_path), progress=False)
    trained = mcip.load_model(result.model_dir)
    changed = _changed(before, trained)
    blocks = trained.text_block_prefixes()
    allowed = {
        n
        for n, _ in trained.net.named_parameters()
        if n.startswith(blocks[-1] + ".")
        or n.startswith("ln_final.")
        or trained.part_of(n) in ("text_projector", "logit_scale")
    }
    assert changed and changed <= allowed
    assert "logit_scale" in changed and "text_projection" in changed
    records = [r for r in mcip.data.load_records(synth)][:10]
    before_emb, _ = encode_records(base_model, records)
    after_emb, _ = encode_records(trained, records)
    assert torch.equal(before_emb, after_emb)  # bitwise: Re-A never touches image embeddings


def test_realign_after_drop_projector_fits_a_text_projector(tiny_openclip, synth, tmp_path):
    cfg = _config("realign", f"openclip:{tiny_openclip}", synth, tmp_path, "model.drop_projector=true")
    result = run_stage(cfg, progress=False)
    trained = mcip.load_model(result.model_dir)
    assert trained.embed_dim == 32  # the ViT width: the projector was dropped
    assert trained.encode_text(["a circle"]).shape == (1, 32)


def test_align_trains_the_configured_parts(model_specs, synth, tmp_path):
    spec = model_specs["composed"]["spec"]
    torch.manual_seed(0)
    base = mcip.save_model(mcip.load_model(spec, embed_dim=16, image_size=32), tmp_path / "base")
    before = _states(mcip.load_model(base))
    result = run_stage(_config("align", base, synth, tmp_path), progress=False)
    trained = mcip.load_model(result.model_dir)
    changed = _changed(before, trained)
    assert changed == _part_names(trained, {"image_projector", "text_projector", "logit_scale"})


@pytest.mark.parametrize("parts", [("image_projector", "text_projector", "logit_scale"), ("text_encoder",)])
def test_align_on_cached_frozen_features_equals_running_the_frozen_encoders(
    model_specs, synth, tmp_path, parts
):
    """With a frozen encoder the align stage runs the projectors on cached features; the loss must equal
    running the encoders on the same (eval-transformed) images and the same captions."""
    from mcip.data import load_records
    from mcip.data.dataset import decode_image
    from mcip.data.pairs import CollatePairs, SampledCaptionDataset
    from mcip.losses import InfoNCELoss
    from mcip.stages.align import AlignTask
    from mcip.stages.features import frozen_image_features, frozen_text_features

    model = mcip.load_model(model_specs["composed"]["spec"], embed_dim=16, image_size=32)
    records = load_records(synth)[:12]
    image_feats = frozen_image_features(model, records, tmp_path / "cache")
    text_feats = None if "text_encoder" in parts else frozen_text_features(model, records, tmp_path / "cache")
    assert image_feats.shape == (12, model.image_features(torch.zeros(1, 3, 32, 32)).shape[-1])
    torch.manual_seed(3)
    pairs = SampledCaptionDataset(records)
    batch = CollatePairs(model.tokenize)([pairs[i] for i in range(12)])
    for j, i in enumerate(batch["image_index"].tolist()):  # caption_index points at the drawn caption
        flat = [c for r in records for c in r.captions]
        assert flat[int(batch["caption_index"][j])] in records[i].captions
    with torch.no_grad():
        cached = AlignTask(model, InfoNCELoss(), image_feats, text_feats)(batch)["loss"]
        rows = [records[i] for i in batch["image_index"].tolist()]
        batch["pixels"] = torch.stack([decode_image(r.path, model.eval_transform, "") for r in rows])
        full = AlignTask(model, InfoNCELoss())(batch)["loss"]
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)


def test_align_with_a_frozen_image_encoder_trains_from_cached_features(
    model_specs, synth, tmp_path, monkeypatch
):
    spec = model_specs["composed"]["spec"]
    base = mcip.save_model(mcip.load_model(spec, embed_dim=16, image_size=32), tmp_path / "base")
    from mcip import embed

    calls = []
    original = embed.decode_image
    monkeypatch.setattr(embed, "decode_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    cfg = _config("align", base, synth, tmp_path, "loop.max_steps=4")
    run_stage(cfg, progress=False)
    first = len(calls)
    calls.clear()
    run_stage(
        _config("align", base, synth, tmp_path / "again", f"cache_dir={tmp_path / 'cache'}"), progress=False
    )
    assert (
        len(calls) < first
    )  # the second run reads the image features from the cache (only validation decodes)


def test_pipeline_feeds_each_stage_the_previous_model(tiny_openclip, synth, tmp_path):
    raw = load_config(
        None,
        [
            "pipeline=2sft",
            f"model.spec=openclip:{tiny_openclip}",
            f"data.train={synth}",
            f"out={tmp_path / 'run'}",
            f"cache_dir={tmp_path / 'cache'}",
            *FAST,
        ],
    )
    results = run(raw, progress=False)
    assert [r.stage for r in results] == ["gpr", "realign"]
    assert results[0].model_dir == tmp_path / "run" / "01-gpr" / "model"
    cfg2 = (tmp_path / "run" / "02-realign" / "config.yaml").read_text()
    assert str(results[0].model_dir) in cfg2
    gpr, rea = mcip.load_model(results[0].model_dir), mcip.load_model(results[1].model_dir)
    for name in _part_names(gpr, {"image_encoder", "image_projector"}):
        assert torch.equal(gpr.net.state_dict()[name], rea.net.state_dict()[name])
    again = run(load_config(tmp_path / "run" / "config.yaml"), resume=True, progress=False)
    assert all(r.train is None for r in again)  # finished stages are reused, not retrained


def test_stage_without_captions_says_how_to_add_them(tiny_openclip, tmp_path):
    root = tmp_path / "nocap"
    manifest = make_dataset(root, per_class=3)
    lines = manifest.read_text().splitlines()
    manifest.write_text(
        "path,label\n" + "\n".join(",".join(line.split(",")[:2]) for line in lines[1:]) + "\n"
    )
    with pytest.raises(mcip.InputError, match=r"data\.captions"):
        run_stage(_config("mcip", f"openclip:{tiny_openclip}", manifest, tmp_path), progress=False)


def test_gpr_trains_and_validates_from_tar_shards(tiny_openclip, synth, tmp_path):
    records = mcip.data.load_records(synth)
    shards = mcip.data.write_shards(records, tmp_path / "shards", 20)
    assert len(shards) >= 2
    cfg = _config("gpr", f"openclip:{tiny_openclip}", str(tmp_path / "shards" / "*.tar"), tmp_path)
    result = run_stage(cfg, progress=False)
    assert result.train.steps == 3 and result.train.skipped == 0
    assert result.train.best_metric is not None  # validation read the held-out classes from the shards


def test_training_runs_in_train_mode_with_idle_towers_in_eval(model_specs, synth, tmp_path, monkeypatch):
    """load_model returns eval mode; a stage must train in train mode (dropout, patch dropout, BN), except
    towers that have nothing to train."""
    import mcip.stages.run as stages

    seen = {}
    real_train = stages.train

    def spy(task, *args, **kwargs):
        seen["task"] = task.training
        seen["image"] = task.model.image_encoder.training
        seen["text"] = task.model.text_encoder.training
        return real_train(task, *args, **kwargs)

    monkeypatch.setattr(stages, "train", spy)
    spec = model_specs["composed"]["spec"]
    base = mcip.save_model(mcip.load_model(spec, embed_dim=16, image_size=32), tmp_path / "base")
    run_stage(_config("gpr", base, synth, tmp_path), progress=False)
    assert seen == {"task": True, "image": True, "text": False}
    run_stage(_config("align", base, synth, tmp_path), progress=False)
    assert seen == {"task": True, "image": False, "text": False}


def test_collate_pairs_reports_unreadable_images_and_pickles(tmp_path):
    import pickle

    from mcip.data import ImageDataset, ImageRecord
    from mcip.data.pairs import CollatePairs, SampledCaptionDataset

    records = [
        ImageRecord("a", tmp_path / "missing.png", "x", ("a caption",)),
        ImageRecord("b", tmp_path / "b", "x"),
    ]
    pairs = SampledCaptionDataset(records, ImageDataset(records, lambda im: torch.zeros(3, 2, 2), {"x": 0}))
    assert len(pairs) == 1  # the record without captions is left out
    collate = pickle.loads(pickle.dumps(CollatePairs(str.split)))
    batch = collate([pairs[0]])
    assert batch["image_index"].shape == (0,) and "missing.png" in batch["skipped"][0][1]


def test_explicit_validation_manifest_replaces_the_class_fraction(tiny_openclip, synth, tmp_path):
    from mcip.stages.inputs import read_records as _records

    val = make_dataset(tmp_path / "held", per_class=3, held_out=True)
    cfg = _config("gpr", f"openclip:{tiny_openclip}", synth, tmp_path, f"data.val={val}")
    train, held, seen = _records(cfg)
    assert not seen  # data.val shares no class with train: unseen-class validation
    assert len(train) == len(mcip.data.load_records(synth))  # nothing of train held out
    assert {r.label for r in held} == {f"{c}_{s}" for c, s in HELD_OUT}
    result = run_stage(cfg, progress=False)
    assert result.train.val_metric == "i2i_map" and result.train.best_metric is not None


def test_explicit_validation_manifest_of_trained_classes_needs_seen_mode(tiny_openclip, synth, tmp_path):
    from mcip.errors import InputError
    from mcip.stages.inputs import read_records as _records

    cfg = _config(
        "gpr",
        f"openclip:{tiny_openclip}",
        synth,
        tmp_path,
        f"data.val={synth}",
        "data.val_mode=unseen_classes",
    )
    with pytest.raises(InputError, match="hold out whole classes"):
        _records(cfg)
    auto = _config("gpr", f"openclip:{tiny_openclip}", synth, tmp_path, f"data.val={synth}")
    assert _records(auto)[2]  # auto: val shares the classes, so it validates on seen classes


@pytest.mark.parametrize("stage", ["gpr", "mcip"])
def test_class_mean_centres_start_at_the_starting_models_class_means(stage, tiny_openclip, synth, tmp_path):
    from mcip.data import class_index
    from mcip.engine.distributed import init_distributed
    from mcip.models import load_model
    from mcip.stages.catalog import stage_entry
    from mcip.stages.inputs import read_inputs

    cfg = _config(stage, f"openclip:{tiny_openclip}", synth, tmp_path, "loss.centre_init=class_means")
    model = load_model(cfg.model.spec)
    inputs = read_inputs(cfg)
    train = inputs.train
    prepared = stage_entry(stage).builder(model, cfg, inputs, init_distributed())
    arc = prepared.task.loss if stage == "gpr" else prepared.task.loss.arc
    classes = class_index(train)
    emb, rows_kept = encode_records(model, train)
    assert len(rows_kept) == len(train)
    for label, c in classes.items():
        rows = torch.stack([e for e, r in zip(emb, train, strict=True) if r.label == label])
        mean = torch.nn.functional.normalize(torch.nn.functional.normalize(rows, dim=1).mean(0), dim=0)
        centre = torch.nn.functional.normalize(arc.weight[c].detach(), dim=0)
        torch.testing.assert_close(centre, mean, atol=2e-3, rtol=0)  # the cache holds float16
