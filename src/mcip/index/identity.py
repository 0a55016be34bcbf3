"""Which model an index belongs to, and whether a model may query or extend it.

The stored embeddings depend on the image tower only. So the rule is: the image-tower fingerprint
(``model_fingerprint(model, IMAGE_PARTS)``) and the embedding width must equal the ones the index was
built with, or the model is refused. A model whose text tower changed since the build (Re-A after GPR-FT
is exactly that) still produces the same image embeddings and may query the index; ``text_tower_changed``
says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mcip.errors import ConfigError
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


def check_model(model: EmbeddingModel, manifest: dict, index_dir: str | os.PathLike) -> Compatibility:
    """Refuse (``ConfigError``) a model whose image embeddings differ from the stored ones."""
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


def load_stored_model(manifest: dict, device: str = "cpu") -> EmbeddingModel:
    """The model named in the manifest, loaded with the options it was built with."""
    from mcip.models import load_model

    return load_model(manifest["model"], device=device, **manifest.get("model_options", {}))


def resolve_model(
    model: EmbeddingModel | str | os.PathLike | None, manifest: dict, device: str = "cpu"
) -> EmbeddingModel:
    """``model`` as an EmbeddingModel: None loads the stored spec; a spec string loads with the stored options."""
    if isinstance(model, EmbeddingModel):
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
