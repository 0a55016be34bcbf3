"""Hugging Face transformers backend: ``hf:ID_OR_DIR`` for CLIP and SigLIP models.

The directory (or hub id) must hold the model (``save_pretrained``) and its tokenizer; a
``preprocessor_config.json`` supplies image size, mean and std when present.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcip.errors import ConfigError, ModelLoadError, require
from mcip.models import text_split
from mcip.models.base import (
    EmbeddingModel,
    Tokens,
    check_projector_weight,
    groups_around_blocks,
    prefix_match,
)
from mcip.models.transforms import ImageConfig

# Per model type: the class name in transformers, default mean/std, and tokenizer padding.
_FAMILIES: dict[str, dict[str, Any]] = {
    "clip": {
        "cls": "CLIPModel",
        "mean": (0.48145466, 0.4578275, 0.40821073),
        "std": (0.26862954, 0.26130258, 0.27577711),
        "padding": "longest",
    },
    "siglip": {
        "cls": "SiglipModel",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "padding": "max_length",
    },
}


def _transformers():
    return require("transformers", "hf", "Hugging Face models (hf: specs and composed text towers)")


class HFModel(EmbeddingModel):
    """A transformers ``CLIPModel`` or ``SiglipModel`` behind the :class:`EmbeddingModel` protocol."""

    backend = "hf"

    def __init__(self, net: nn.Module, tokenizer, image_config: ImageConfig, spec: str) -> None:
        super().__init__(net, image_config, spec)
        self.model_type = net.config.model_type
        if self.model_type not in _FAMILIES:
            raise ConfigError(
                f"hf backend supports model types {sorted(_FAMILIES)}, got '{self.model_type}'. "
                "For other towers use a composed: spec."
            )
        self.tokenizer = tokenizer
        self._siglip = self.model_type == "siglip"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_spec(cls, rest: str, spec: str, **kwargs: Any) -> HFModel:
        tf = _transformers()
        source = rest
        local = Path(rest).expanduser()
        if local.exists():
            source = str(local)
        elif rest.startswith((".", "/", "~")):
            raise ModelLoadError(f"Model directory not found: {rest}. Check the path.")
        try:
            config = tf.AutoConfig.from_pretrained(source)
            family = _family(config.model_type)
            net = getattr(tf, family["cls"]).from_pretrained(source, **kwargs)
            tokenizer = tf.AutoTokenizer.from_pretrained(source)
        except OSError as exc:
            raise ModelLoadError(
                f"Could not load Hugging Face model '{rest}': {exc}. Pass a local directory saved with "
                "save_pretrained (model + tokenizer), or give this machine access to the model hub."
            ) from exc
        return cls(net, tokenizer, _image_config(source, net.config), spec)

    def build_info(self, asset_dir: Path) -> dict[str, Any]:
        self.tokenizer.save_pretrained(asset_dir / "tokenizer")
        return {
            "config": self.net.config.to_dict(),
            "image_config": self.image_config.to_dict(),
        }

    @classmethod
    def from_build_info(cls, info: dict[str, Any], asset_dir: Path, spec: str) -> HFModel:
        tf = _transformers()
        cfg_dict = dict(info["config"])
        family = _family(cfg_dict["model_type"])
        config = tf.AutoConfig.for_model(**cfg_dict)
        net = getattr(tf, family["cls"])(config)
        tokenizer = tf.AutoTokenizer.from_pretrained(str(asset_dir / "tokenizer"))
        return cls(net, tokenizer, ImageConfig.from_dict(info["image_config"]), spec)

    # ------------------------------------------------------------------ encoders
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.vision_model(pixel_values=pixels).pooler_output

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        return features if self._siglip else self.net.visual_projection(features)

    def text_features(self, tokens: Tokens) -> torch.Tensor:
        tm = self.net.text_model
        kwargs = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        if self._siglip:  # SigLIP pools the last token before its head (the projector)
            return tm(**kwargs).last_hidden_state[:, -1, :]
        return tm(**kwargs).pooler_output

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.text_model.head(features) if self._siglip else self.net.text_projection(features)

    # the text tower in two halves (documented on EmbeddingModel, mirrored in mcip.models.text_split)
    def text_hidden_below(self, tokens: Tokens, n_last: int) -> torch.Tensor:
        return text_split.hf_hidden_below(self, tokens, n_last)

    def text_features_from_hidden(self, hidden: torch.Tensor, tokens: Tokens, n_last: int) -> torch.Tensor:
        return text_split.hf_from_hidden(self, hidden, tokens, n_last)

    def text_hidden_lengths(self, tokens: Tokens) -> torch.Tensor:
        return text_split.hf_lengths(self, tokens)

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        padding = _FAMILIES[self.model_type]["padding"]
        max_len = self.net.config.text_config.max_position_embeddings
        out = self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=max_len, return_tensors="pt"
        )
        return dict(out)

    # ------------------------------------------------------------------ parts
    def part_of(self, name: str) -> str:
        if name in ("logit_scale", "logit_bias"):
            return name
        if prefix_match(name, ["visual_projection"]):
            return "image_projector"
        if name.startswith("vision_model."):
            return "image_encoder"
        if prefix_match(name, ["text_projection", "text_model.head"]):
            return "text_projector"
        return "text_encoder"

    def text_block_prefixes(self) -> list[str]:
        return [f"text_model.encoder.layers.{i}" for i in range(len(self.net.text_model.encoder.layers))]

    def text_final_norm_prefixes(self) -> list[str]:
        return ["text_model.final_layer_norm"]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        hf_checkpointing(self.net, enable)

    def image_groups(self) -> list[list[str]]:
        blocks = [f"encoder.layers.{i}" for i in range(len(self.net.vision_model.encoder.layers))]
        return groups_around_blocks(self.net.vision_model, "vision_model.", blocks)

    # ------------------------------------------------------------------ surgery
    def drop_image_projector(self) -> None:
        if self._siglip:
            raise ConfigError("SigLIP models have no image projector to drop; train the joint embedding.")
        self.net.visual_projection = nn.Identity()
        self.modifications["drop_image_projector"] = True

    def replace_text_projector(self, out_dim: int, weight: torch.Tensor | None = None) -> None:
        old = self.net.text_model.head if self._siglip else self.net.text_projection
        new = nn.Linear(old.in_features, out_dim, bias=self._siglip)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        check_projector_weight(weight, old.in_features, out_dim)
        if weight is not None:
            with torch.no_grad():
                new.weight.copy_(weight.T)
                if new.bias is not None:
                    new.bias.zero_()
        if self._siglip:
            self.net.text_model.head = new
        else:
            self.net.text_projection = new
        self.modifications["text_projector_out"] = out_dim

    @property
    def embed_dim(self) -> int:
        if self._siglip:
            return int(self.net.text_model.head.out_features)
        proj = self.net.visual_projection
        return (
            int(proj.out_features)
            if isinstance(proj, nn.Linear)
            else int(self.net.config.vision_config.hidden_size)
        )

    @property
    def image_encoder(self) -> nn.Module:
        return self.net.vision_model

    @property
    def image_projector(self) -> nn.Module | None:
        return None if self._siglip else self.net.visual_projection

    @property
    def text_encoder(self) -> nn.Module:
        return self.net.text_model

    @property
    def text_projector(self) -> nn.Module:
        return self.net.text_model.head if self._siglip else self.net.text_projection

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.net.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return getattr(self.net, "logit_bias", None)


def hf_checkpointing(net: nn.Module, enable: bool) -> None:
    """Turn activation checkpointing of a transformers model on/off (non-reentrant; v4 and v5 names)."""
    if enable:
        on = getattr(net, "activation_checkpointing_enable", None)
        if on is not None:
            on(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        off = getattr(net, "activation_checkpointing_disable", None) or net.gradient_checkpointing_disable
        off()


def _family(model_type: str) -> dict[str, Any]:
    if model_type not in _FAMILIES:
        raise ConfigError(
            f"hf backend supports model types {sorted(_FAMILIES)}, got '{model_type}'. "
            "For other towers use a composed: spec."
        )
    return _FAMILIES[model_type]


def _image_config(source: str, config) -> ImageConfig:
    family = _family(config.model_type)
    size = int(config.vision_config.image_size)
    mean, std = family["mean"], family["std"]
    pp = Path(source) / "preprocessor_config.json"
    if pp.is_file():
        d = json.loads(pp.read_text())
        mean = tuple(d.get("image_mean", mean))
        std = tuple(d.get("image_std", std))
    return ImageConfig(size=size, mean=mean, std=std)
