"""``mcip serve --runtime onnx``: an ONNX export of the index's model answers as the PyTorch model does (the
PyTorch-served app of ``conftest`` is the reference), and an export of another model is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mcip
from mcip.cli import main
from mcip.errors import ConfigError
from tests.serve.conftest import COLOURS, png_bytes, synthetic_image

pytest.importorskip("onnxruntime")

TEXTS = ["a red emoji", "a yellow face", "blue"]


@pytest.fixture(scope="module")
def export_dir(tiny_model_dir, tmp_path_factory):
    """The index's model (``conftest``'s ``tiny_model_dir``) exported to ONNX."""
    from mcip.export import export_onnx

    folder = tmp_path_factory.mktemp("serve_onnx") / "export"
    export_onnx(mcip.load_model(tiny_model_dir), folder)
    return folder


@pytest.fixture(scope="module")
def other_export_dir(tiny_openclip, tmp_path_factory):
    """The same architecture with other weights, exported: not the index's model."""
    from mcip.export import export_onnx

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("serve_onnx_other") / "export"
    export_onnx(mcip.load_model(f"openclip:{tiny_openclip}"), folder)
    return folder


@pytest.fixture(scope="module")
def onnx_client(index_dir, export_dir):
    from fastapi.testclient import TestClient

    from mcip.export import OnnxModel, load_onnx_model
    from mcip.index import SearchIndex
    from mcip.serve import create_app

    index = SearchIndex.open(index_dir, model=load_onnx_model(export_dir))
    assert isinstance(index.model, OnnxModel) and not index.info["text_tower_changed"]
    with TestClient(create_app(index)) as client:
        yield client
    index.close()


def _answers(body: dict) -> tuple[list[str], list[float]]:
    return [r["id"] for r in body["results"]], [r["score"] for r in body["results"]]


def _same_answers(onnx: dict, torch_: dict) -> None:
    """Same ids in the same order, scores within 1e-5."""
    ids, scores = _answers(onnx)
    ref_ids, ref_scores = _answers(torch_)
    assert ids == ref_ids and len(ids) > 0
    assert scores == pytest.approx(ref_scores, abs=1e-5)


@pytest.mark.parametrize("text", TEXTS)
def test_text_search_answers_as_the_pytorch_app(onnx_client, client, text):
    params = {"text": text, "k": 8}
    _same_answers(
        onnx_client.get("/search", params=params).json(), client.get("/search", params=params).json()
    )


def test_image_and_mixed_uploads_answer_as_the_pytorch_app(onnx_client, client):
    data = png_bytes(synthetic_image(COLOURS["green"], seed=99))
    for form in ({"k": "6"}, {"text": "a yellow face", "alpha": "0.3", "k": "6"}):
        answers = [
            c.post("/search", files={"image": ("q.png", data, "image/png")}, data=form)
            for c in (onnx_client, client)
        ]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        _same_answers(answers[0].json(), answers[1].json())


def test_id_search_and_filters_answer_as_the_pytorch_app(onnx_client, client):
    for params in ({"id": "blue/3.png", "k": 5}, {"text": "a red emoji", "where": "label=red", "k": 5}):
        _same_answers(
            onnx_client.get("/search", params=params).json(), client.get("/search", params=params).json()
        )


def test_an_index_of_onnx_embeddings_serves_with_the_export(index_dir, export_dir, client, tmp_path):
    """An index written from the embeddings ``mcip encode --runtime onnx`` computes (no model recorded)."""
    from fastapi.testclient import TestClient

    from mcip.embed import encode_images
    from mcip.export import load_onnx_model
    from mcip.index import SearchIndex, index_embeddings, load_index_records
    from mcip.serve import create_app

    runtime = load_onnx_model(export_dir)
    images = index_dir.parent / "images"  # what conftest indexed
    paths = [Path(r.path) for r in load_index_records(images)]
    encoded = encode_images(runtime, paths, progress=False)
    assert encoded.rows == list(range(len(paths)))
    index_embeddings(encoded.embeddings, images, tmp_path / "onnx-index")
    params = {"text": "a red emoji", "k": 5}
    with (
        SearchIndex.open(tmp_path / "onnx-index", model=runtime) as index,
        TestClient(create_app(index)) as c,
    ):
        body = c.get("/search", params=params).json()
    _same_answers(body, client.get("/search", params=params).json())


def test_an_export_of_another_model_is_refused_with_the_fix(index_dir, tiny_model_dir, other_export_dir):
    from mcip.export import load_onnx_model
    from mcip.index import SearchIndex

    with pytest.raises(ConfigError) as info:
        SearchIndex.open(index_dir, model=load_onnx_model(other_export_dir))
    message = str(info.value)
    assert "was exported from openclip:" in message and "image tower fingerprint" in message
    assert (
        f"mcip export --onnx {tiny_model_dir.resolve()} --out" in message
    )  # the fix: export the index's model
    assert "mcip index build --model openclip:" in message  # or rebuild the index with the export's source


def test_cli_refuses_a_mismatched_export_and_wrong_flags(index_dir, export_dir, other_export_dir, capsys):
    base = ["serve", "--index", str(index_dir), "--port", "0"]
    assert main([*base, "--runtime", "onnx", "--model", str(other_export_dir)]) == 2
    assert "image tower fingerprint" in capsys.readouterr().err
    assert main([*base, "--runtime", "onnx"]) == 2
    assert "--runtime onnx serves an ONNX export: name its folder with --model" in capsys.readouterr().err
    assert main([*base, "--model", str(export_dir)]) == 2
    assert "add --runtime onnx, or drop --model" in capsys.readouterr().err
