"""Which model an index belongs to, and whether a model may query or extend it.

The stored embeddings depend on the image tower only. So the rule is: the image-tower fingerprint
(``model_fingerprint(model, IMAGE_PARTS)``) and the embedding width must equal the ones the index was
built with, or the model is refused. A model whose text tower changed since the build (Re-A after GPR-FT
is exactly that) still produces the same image embeddings and may query the index; ``text_tower_changed``
says so.

An ONNX export run by onnxruntime (:class:`~mcip.export.onnx_model.OnnxModel`, ``mcip serve --runtime
onnx``) has no parameters to fingerprint: it answers with the fingerprints its export recorded for the
PyTorch model it was exported from (``preprocess.json``, ``source``), and those are compared instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mcip.errors import ConfigError
from mcip.export.onnx_model import OnnxModel
from mcip.models.base import EmbeddingModel
from mcip.models.fingerprint import IMAGE_PARTS, TEXT_PARTS, model_fingerprint


def spec_to_store(model: EmbeddingModel) -> str:
    """The model's spec, made absolute when it names a local directory (so it loads from anywhere)."""
    spec = str(model.spec)
    text = spec[len("mcip:") :] if spec.startswith("mcip:") else spec
    return str(Path(text).resolve()) if Path(text).is_dir() else spec


def load_options(model: EmbeddingModel, extra: dict | None = None) -> dict:
    """The ``load_model`` options that rebuild ``model`` from its spec: precision, projector surgery, and
    ``extra`` (backend options such as a composed model's ``embed_dim``)."""
    from mcip.models.checkpoint import is_mcip_checkpoint
    from mcip.models.precision import precision_of

    precision = precision_of(model.dtype)
    dropped = bool(model.modifications.get("drop_image_projector")) and not is_mcip_checkpoint(
        spec_to_store(model)
    )
    return {"precision": precision, "drop_projector": dropped, **(extra or {})}


def model_identity(model: EmbeddingModel, extra_options: dict | None = None) -> dict:
    """What the manifest records about the model: spec, load options, fingerprints, width."""
    return {
        "model": spec_to_store(model),
        "model_options": load_options(model, extra_options),
        "model_backend": model.backend,
        "fingerprint": model_fingerprint(model),
        "image_fingerprint": model_fingerprint(model, IMAGE_PARTS),
        "text_fingerprint": model_fingerprint(model, TEXT_PARTS),
        "dim": int(model.embed_dim),
        "normalized": True,
    }


@dataclass(frozen=True)
class Compatibility:
    text_tower_changed: bool


QueryModel = EmbeddingModel | OnnxModel
"""What may query an index: a PyTorch model, or an ONNX export run by onnxruntime."""


def tower_fingerprints(model: QueryModel) -> tuple[str, str]:
    """(image-tower, text-tower) fingerprints; an export's are those of the model it was exported from."""
    if isinstance(model, OnnxModel):
        return model.image_fingerprint, model.text_fingerprint
    return model_fingerprint(model, IMAGE_PARTS), model_fingerprint(model, TEXT_PARTS)


def check_model(model: QueryModel, manifest: dict, index_dir: str | os.PathLike) -> Compatibility:
    """Refuse (``ConfigError``) a model whose image embeddings differ from the stored ones."""
    if isinstance(model, OnnxModel):
        return _check_export(model, manifest, index_dir)
    built_with = manifest["model"]
    rebuild = f"mcip index build --model {model.spec} --images ... --out {index_dir}"
    if int(model.embed_dim) != int(manifest["dim"]):
        raise ConfigError(
            f"The index {index_dir} holds {manifest['dim']}-d embeddings of {built_with}; the model "
            f"{model.spec} embeds into {model.embed_dim} dimensions. Query with the model the index was "
            f"built with, or rebuild the index: {rebuild}"
        )
    if manifest["image_fingerprint"] is None:  # built from embeddings without a model: cannot verify
        return Compatibility(text_tower_changed=False)
    image_fp = model_fingerprint(model, IMAGE_PARTS)
    if image_fp != manifest["image_fingerprint"]:
        raise ConfigError(
            f"The index {index_dir} was built with {built_with} (image tower fingerprint "
            f"{manifest['image_fingerprint']}), but the model given, {model.spec}, has image tower "
            f"fingerprint {image_fp}: its image embeddings differ from the stored ones, so every score "
            f"would be meaningless. Query with the model the index was built with (omit --model, or pass "
            f"its saved directory), or rebuild the index: {rebuild}"
        )
    return Compatibility(
        text_tower_changed=model_fingerprint(model, TEXT_PARTS) != manifest["text_fingerprint"]
    )


def _check_export(model: OnnxModel, manifest: dict, index_dir: str | os.PathLike) -> Compatibility:
    """:func:`check_model` for an ONNX export: its source model's recorded fingerprints against the index's."""
    built_with, source = manifest["model"], model.source.get("spec")
    export = f"mcip export --onnx {built_with} --out NEW_FOLDER" if built_with else "mcip export --onnx MODEL"
    if int(model.embed_dim) != int(manifest["dim"]):
        raise ConfigError(
            f"The index {index_dir} holds {manifest['dim']}-d embeddings; the ONNX export {model.folder} "
            f"(of {source}) embeds into {model.embed_dim} dimensions. Serve it with an export of the model "
            f"the index was built with ({export}), or rebuild the index with {source}."
        )
    if manifest["image_fingerprint"] is None:  # built from embeddings without a model: cannot verify
        return Compatibility(text_tower_changed=False)
    image_fp, text_fp = tower_fingerprints(model)
    if image_fp != manifest["image_fingerprint"]:
        raise ConfigError(
            f"The index {index_dir} was built with {built_with} (image tower fingerprint "
            f"{manifest['image_fingerprint']}), but the ONNX export {model.folder} was exported from "
            f"{source} (image tower fingerprint {image_fp}, preprocess.json): its embeddings differ from "
            f"the stored ones, so every score would be meaningless. Export the model the index was built "
            f"with and serve that folder ({export}), or rebuild the index with the export's source model: "
            f"mcip index build --model {source} --images ... --out {index_dir}"
        )
    return Compatibility(text_tower_changed=text_fp != manifest["text_fingerprint"])


def load_stored_model(manifest: dict, device: str = "cpu") -> EmbeddingModel:
    """The model named in the manifest, loaded with the options it was built with."""
    from mcip.models import load_model

    return load_model(manifest["model"], device=device, **manifest.get("model_options", {}))


def resolve_model(
    model: QueryModel | str | os.PathLike | None, manifest: dict, device: str = "cpu"
) -> QueryModel:
    """``model`` as a model: None loads the stored spec; a spec string loads with the stored options; an
    EmbeddingModel or an :class:`~mcip.export.onnx_model.OnnxModel` is returned as it is."""
    if isinstance(model, EmbeddingModel | OnnxModel):
        return model
    if model is None:
        if manifest["model"] is None:
            raise ConfigError(
                "This index was built from precomputed embeddings and names no model: pass the model that "
                "produced them (--model / model=), or open it with load_model=False for vector and id queries."
            )
        return load_stored_model(manifest, device)
    from mcip.models import load_model

    options = manifest.get("model_options", {})
    precision = options.get("precision", "fp32")
    return load_model(
        model, device=device, precision=precision, drop_projector=options.get("drop_projector", False)
    )
