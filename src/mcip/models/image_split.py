"""An image encoder run in two halves: its first ``groups`` parameter groups (the "stem": what
``freeze_image_groups`` keeps fixed in the image stages) once per image, the rest per model.

The groups are :meth:`EmbeddingModel.image_groups` (the stem, then one per block or stage). With the
first ``groups`` of them frozen, every model a run derives from one start (GPR-FT, MCIP, their WiSE-FT
merges, the Re-A rows that share their image tower) computes the same stem activations for an image under
the eval transform, so :func:`mcip.embed.cached_image_stem` stores them once and each model runs only
:func:`features_from_stem`:

- ``stem(model, pixels, groups)``: (B, 3, S, S) -> the activations after the first ``groups`` groups;
- ``features_from_stem(model, x, groups)``: those -> (B, F_img) pooled features, so that
  ``features_from_stem(stem(p, g), g) == model.image_features(p)`` (the same module calls in the same
  order: equal to the last bit on the same batch).

Supported: timm's ``EfficientNet`` (EfficientNet, -Lite, MixNet, MNASNet...) and ``MobileNetV3`` image
encoders of composed models, which are ``conv_stem``, ``bn1``, ``blocks`` and a head; each half mirrors
timm's ``forward_features`` / ``forward_head``. Anything else (ViTs, open_clip, transformers) reports
unsupported: callers then run the whole encoder, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from mcip.errors import ConfigError, UnsupportedError

if TYPE_CHECKING:
    from mcip.models.base import EmbeddingModel


def _timm_kind(encoder: nn.Module) -> str | None:
    """ "efficientnet", "mobilenetv3" or None (not a layout this module can split)."""
    try:
        from timm.models.efficientnet import EfficientNet
        from timm.models.mobilenetv3 import MobileNetV3
    except ImportError:  # pragma: no cover - timm is a core dependency
        return None
    if isinstance(encoder, EfficientNet):
        return "efficientnet"
    if isinstance(encoder, MobileNetV3):
        return "mobilenetv3"
    return None


def _encoder(model: EmbeddingModel) -> nn.Module | None:
    """The model's image encoder when ``model.image_features`` is exactly its timm forward, else None."""
    if model.backend != "composed":
        return None
    encoder = model.image_encoder
    return encoder if _timm_kind(encoder) else None


def supports(model: EmbeddingModel, groups: int) -> bool:
    """Whether ``model``'s image encoder can be split after its first ``groups`` groups (1 <= groups <
    the number of groups: the stem alone, or the stem and ``groups - 1`` blocks)."""
    encoder = _encoder(model)
    if encoder is None or getattr(encoder, "grad_checkpointing", False):
        return False
    return 1 <= groups <= len(encoder.blocks)


def _check(model: EmbeddingModel, groups: int) -> nn.Module:
    if not supports(model, groups):
        encoder = model.image_encoder
        if _encoder(model) is None:
            raise UnsupportedError(
                f"The {model.backend} backend's image encoder ({type(encoder).__name__}) cannot be run in two "
                "halves (timm EfficientNet and MobileNetV3 encoders of composed models can); the whole "
                "encoder runs instead."
            )
        raise ConfigError(f"groups must be in 1..{len(encoder.blocks)} for this image encoder, got {groups}.")
    return model.image_encoder


def stem(model: EmbeddingModel, pixels: Tensor, groups: int) -> Tensor:
    """(B, 3, S, S) pixels -> the activations after the encoder's first ``groups`` groups."""
    encoder = _check(model, groups)
    x = encoder.bn1(encoder.conv_stem(pixels))
    for block in encoder.blocks[: groups - 1]:
        x = block(x)
    return x


def features_from_stem(model: EmbeddingModel, x: Tensor, groups: int) -> Tensor:
    """The activations :func:`stem` returned -> (B, F_img) pooled features (the rest of the encoder)."""
    encoder = _check(model, groups)
    for block in encoder.blocks[groups - 1 :]:
        x = block(x)
    if _timm_kind(encoder) == "efficientnet":  # EfficientNet.forward_features ends with the head conv
        x = encoder.bn2(encoder.conv_head(x))
    return encoder.forward_head(x)  # MobileNetV3's head conv lives in forward_head


def stem_modules(model: EmbeddingModel, groups: int) -> list[tuple[str, nn.Module]]:
    """(name in ``model.net``, module) of every module that :func:`stem` runs, input side first."""
    encoder = _check(model, groups)
    prefix = next(name for name, module in model.net.named_modules() if module is encoder)
    prefix = f"{prefix}." if prefix else ""
    names = ["conv_stem", "bn1", *[f"blocks.{i}" for i in range(groups - 1)]]
    return [(prefix + n, encoder.get_submodule(n)) for n in names]
