"""``load_model(spec)``: one entry point for every backend and for mcip's own checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mcip.errors import ConfigError, ModelLoadError
from mcip.models.base import EmbeddingModel
from mcip.models.checkpoint import is_mcip_checkpoint, load_mcip_checkpoint
from mcip.models.fingerprint import discard_saved_fingerprints, seal_saved_fingerprints
from mcip.models.precision import WEIGHT_DTYPES, WEIGHT_PRECISIONS, WeightPrecision
from mcip.registry import Registry

if TYPE_CHECKING:
    from mcip.models.presets import Preset

BACKENDS: Registry[type[EmbeddingModel]] = Registry("model backend")

SPEC_HELP = (
    "Model specs: openclip:ARCH[/PRETRAINED_TAG_OR_PATH] (e.g. openclip:ViT-B-32/openai), "
    "hf:ID_OR_DIR (transformers CLIP/SigLIP), composed:lab or composed:TIMM_NAME+TEXT_ID_OR_DIR, "
    "or the directory of a model saved by mcip."
)


def _register_builtin() -> None:
    from mcip.models.composed import ComposedModel
    from mcip.models.hf import HFModel
    from mcip.models.openclip import OpenCLIPModel

    for cls in (OpenCLIPModel, HFModel, ComposedModel):
        if cls.backend not in BACKENDS:
            BACKENDS.register(cls.backend)(cls)


def _presets() -> Registry[Preset]:
    from mcip.models.presets import PRESETS

    return PRESETS


def _backends() -> dict[str, type[EmbeddingModel]]:
    _register_builtin()
    return {name: BACKENDS.get(name) for name in BACKENDS.names()}


def load_model(
    spec: str | os.PathLike,
    device: str | torch.device = "cpu",
    drop_projector: bool = False,
    precision: WeightPrecision = "fp32",
    random_init: bool = True,
    **backend_kwargs: Any,
) -> EmbeddingModel:
    """Build a dual encoder from a spec string or an mcip model directory.

    Args:
        spec: ``openclip:...``, ``hf:...``, ``composed:...``, or a directory written by ``save_model``
            (optionally prefixed ``mcip:``).
        device: where to put the model.
        drop_projector: use pre-projector image features as the embedding (ICMR'23 GPR-FT variant).
        precision: weights dtype, ``fp32`` (default; use AMP for mixed-precision training), ``bf16`` or
            ``fp16`` (inference).
        random_init: for a saved mcip model, False builds its architecture without the random
            initialisation its weights replace and leaves torch's random generator where it was (the lab's
            aligned base loads in 0.11 to 0.14 s instead of 0.29 to 0.33); evaluation loads so. The default keeps the draws, so
            a seeded training run that loads its start and then draws (a loss head) reproduces.
        **backend_kwargs: passed to the backend (e.g. ``embed_dim`` for composed models).

    Returns:
        The model in eval mode.
    """
    if precision not in WEIGHT_DTYPES:
        raise ConfigError(f"Unknown precision '{precision}'; use one of {', '.join(WEIGHT_PRECISIONS)}.")
    backends = _backends()
    text = str(spec)
    if text.startswith("mcip:"):
        text = text[len("mcip:") :]
    if is_mcip_checkpoint(text):
        if backend_kwargs:
            raise ConfigError(
                f"Options {sorted(backend_kwargs)} do not apply to a saved mcip model ({text})."
            )
        model = load_mcip_checkpoint(text, backends, random_init=random_init)
    else:
        model = _from_spec(text, backends, backend_kwargs)
    if drop_projector:
        model.drop_image_projector()
        discard_saved_fingerprints(model)
    model = model.to(device=device, dtype=WEIGHT_DTYPES[precision]).eval()
    model.use_channels_last(channels_last_wanted())
    seal_saved_fingerprints(model)
    return model


CHANNELS_LAST_ENV = "MCIP_CHANNELS_LAST"


def channels_last_wanted() -> bool:
    """Whether loaded models keep convolutional image towers channels-last (``$MCIP_CHANNELS_LAST``, on
    unless set to 0). On this project's 2-core CPU the lab's EfficientNet-Lite0 trained 1.62x and ran its
    forward pass 1.66x faster channels-last (``benchmarks/sys_time.py``, ``benchmarks/encode.py``)."""
    value = os.environ.get(CHANNELS_LAST_ENV, "1").strip().lower()
    if value not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
        raise ConfigError(f"${CHANNELS_LAST_ENV} must be 1 or 0, got {value!r}.")
    return value in ("1", "true", "yes", "on")


def _from_spec(
    text: str, backends: dict[str, type[EmbeddingModel]], kwargs: dict[str, Any]
) -> EmbeddingModel:
    prefix, sep, rest = text.partition(":")
    if sep and prefix in backends:
        if not rest:
            raise ConfigError(f"Model spec '{text}' names no model after '{prefix}:'. {SPEC_HELP}")
        presets = _presets()
        if text in presets:
            return presets.get(text).build(spec=text, **kwargs)
        return backends[prefix].from_spec(rest, spec=text, **kwargs)
    if Path(text).is_dir():
        raise ModelLoadError(f"{text} is a directory but not an mcip model (no mcip_model.json). {SPEC_HELP}")
    if Path(text).suffix in (".pt", ".pth", ".safetensors", ".bin"):
        raise ModelLoadError(
            f"'{text}' looks like a weights file; say which architecture it belongs to, e.g. "
            f"openclip:ViT-L-14-336/{text}. {SPEC_HELP}"
        )
    known = ", ".join(f"{b}:" for b in backends)
    raise ConfigError(f"Unknown model spec '{text}' (known prefixes: {known}). {SPEC_HELP}")


def list_backends() -> list[str]:
    _register_builtin()
    return BACKENDS.names()


def list_presets() -> dict[str, str]:
    """Every named model spec (``mcip.models.presets``), sorted, with its one-line description."""
    presets = _presets()
    return {name: presets.get(name).description for name in presets.names()}
