"""open_clip backend: ``openclip:ARCH[/PRETRAINED_TAG_OR_PATH]``.

- ``openclip:ViT-B-32/openai``          architecture + pretrained tag (downloads through open_clip)
- ``openclip:ViT-SO400M-14-SigLIP-384/MCIP-ViT-SO400M-14-SigLIP-384.pth``  architecture + a local full
  state dict, loaded strictly (``.pth`` or ``.pt``, plain, wrapped in ``{"state_dict": ...}`` or with DDP's
  ``module.`` prefix); the authors released two such files, ``MCIP-ViT-L-14-336.pth`` (``ViT-L-14-336``,
  tag ``openai``) and ``MCIP-ViT-SO400M-14-SigLIP-384.pth`` (``ViT-SO400M-14-SigLIP-384``, tag ``webli``).
  The image normalisation is the one every pretrained tag of the architecture shares (webli's mean and std
  0.5 for the SigLIP file), and so is the activation when every tag uses OpenAI's QuickGELU (the ViT-L
  file: ``ViT-L-14-336``'s only tag is ``openai``), as when the model is created with its tag and the file
  loaded over it; an architecture whose tags disagree takes open_clip's default (GELU): spell
  ``ARCH-quickgelu`` for a fine-tune of OpenAI's weights. A tag runs the activation its weights were
  trained with (OpenAI's tags: QuickGELU; open_clip 3 itself only warns and builds GELU)
- ``openclip:ViT-B-32``                 architecture with random weights
- ``openclip:hf-hub:org/repo`` / ``openclip:local-dir:/path``  open_clip's own schemas
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcip.errors import ConfigError, ModelLoadError
from mcip.models import text_split
from mcip.models.base import (
    EmbeddingModel,
    Tokens,
    check_projector_weight,
    groups_around_blocks,
    prefix_match,
)
from mcip.models.openclip_spec import (  # noqa: F401  (parse_openclip_spec, load_openclip_state_dict: public here too)
    _check_arch,
    _check_pretrained,
    _looks_like_path,
    _open_clip,
    _summarise_load_error,
    load_openclip_state_dict,
    parse_openclip_spec,
    shared_tag_preprocess,
    uses_quick_gelu,
    wants_quick_gelu,
)
from mcip.models.transforms import ImageConfig


class OpenCLIPModel(EmbeddingModel):
    """An open_clip ``CLIP`` or ``CustomTextCLIP`` behind the :class:`EmbeddingModel` protocol."""

    backend = "openclip"

    def __init__(self, net: nn.Module, arch: str, tokenizer, image_config: ImageConfig, spec: str) -> None:
        super().__init__(net, image_config, spec)
        self.arch = arch
        self._tokenizer = tokenizer
        visual = net.visual
        self._vit = hasattr(visual, "_embeds") and hasattr(visual, "proj")
        self._timm = hasattr(visual, "trunk") and hasattr(visual, "head")
        self._custom_text = hasattr(net, "text")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_spec(cls, rest: str, spec: str, pretrained: str | None = None, **kwargs: Any) -> OpenCLIPModel:
        arch, spec_pretrained = parse_openclip_spec(rest)
        pretrained = pretrained or spec_pretrained
        schema = arch.startswith(("hf-hub:", "local-dir:"))
        if not schema:
            _check_arch(arch)
        kind = _check_pretrained(arch, pretrained) if pretrained and not schema else None
        open_clip = _open_clip()
        preprocess = shared_tag_preprocess(arch) if kind == "file" else {}
        if preprocess and "force_preprocess_cfg" not in kwargs:
            kwargs = {**kwargs, "force_preprocess_cfg": preprocess}
        if "force_quick_gelu" not in kwargs and wants_quick_gelu(arch, pretrained, kind):
            kwargs = {**kwargs, "force_quick_gelu": True}
        try:
            net = open_clip.create_model(
                arch, pretrained=pretrained if kind == "tag" else None, pretrained_text=False, **kwargs
            )
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelLoadError(
                f"open_clip could not create '{arch}' (pretrained={pretrained!r}): "
                f"{_summarise_load_error(str(exc))} If this is a download, the machine needs network "
                "access to the model hub, or pass a local checkpoint file instead of a tag."
            ) from exc
        if kind == "file":
            load_openclip_state_dict(net, Path(pretrained).expanduser())
        tokenizer = open_clip.get_tokenizer(arch)
        return cls(net, arch, tokenizer, _image_config(net), spec)

    def computation(self) -> dict[str, Any]:
        """QuickGELU that the architecture's config does not imply (turned on for an OpenAI tag or file):
        such a model must not share caches or indexes with the same weights run with GELU. An
        ``ARCH-quickgelu`` config implies it, so its fingerprints stay what they were."""
        cfg = _open_clip().get_model_config(self.arch) or {}
        implied = bool(cfg.get("quick_gelu", False))
        return {"activation": "quick_gelu"} if uses_quick_gelu(self.net) and not implied else {}

    def build_info(self, asset_dir: Path) -> dict[str, Any]:
        open_clip = _open_clip()
        cfg = open_clip.get_model_config(self.arch) if not self.arch.startswith("local-dir:") else None
        if cfg is None:
            raise ModelLoadError(
                f"Cannot save open_clip model '{self.arch}': its architecture config is unknown to "
                "open_clip. Register it with open_clip.add_model_config before saving."
            )
        return {
            "arch": self.arch,
            "model_cfg": cfg,
            "image_config": self.image_config.to_dict(),
            "quick_gelu": uses_quick_gelu(self.net),  # a tag's QuickGELU is not in the arch's config
        }

    @classmethod
    def from_build_info(cls, info: dict[str, Any], asset_dir: Path, spec: str) -> OpenCLIPModel:
        open_clip = _open_clip()
        arch = info["arch"]
        if open_clip.get_model_config(arch) is None:
            # A custom architecture: register the saved config under its name (open_clip's public API).
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{arch}.json"
                path.write_text(json.dumps(info["model_cfg"]))
                open_clip.add_model_config(path)
        # folders saved before the activation was recorded were built with GELU (open_clip >= 3 does not
        # turn QuickGELU on from a tag, and mcip did not either)
        quick_gelu = bool(info.get("quick_gelu", False))
        net = open_clip.create_model(
            arch, pretrained=None, pretrained_text=False, force_quick_gelu=quick_gelu
        )
        return cls(
            net, arch, open_clip.get_tokenizer(arch), ImageConfig.from_dict(info["image_config"]), spec
        )

    # ------------------------------------------------------------------ encoders
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.net.visual
        if self._vit:
            x = v.transformer(v._embeds(pixels))
            pooled, _ = v._pool(x)
            return pooled
        if self._timm:
            return v.trunk(pixels)
        return v(pixels)  # ModifiedResNet: attention pooling includes its projection

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        v = self.net.visual
        if self._vit:
            return features @ v.proj if v.proj is not None else features
        if self._timm:
            return v.head(features)
        return features

    def text_features(self, tokens: Tokens) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        ids = tokens["input_ids"]
        net = self.net
        if not self._custom_text:
            cast = net.transformer.get_cast_dtype()
            x = net.token_embedding(ids).to(cast) + net.positional_embedding.to(cast)
            x = net.ln_final(net.transformer(x, attn_mask=net.attn_mask))
            return text_global_pool(
                x, ids, net.text_pool_type, eos_token_id=getattr(net, "text_eos_id", None)
            )
        t = net.text
        if hasattr(t, "pooler"):  # HFTextEncoder
            mask = (ids != t.config.pad_token_id).long()
            return t.pooler(t.transformer(input_ids=ids, attention_mask=mask), mask)
        x, attn_mask = t._embeds(ids)
        x = t.transformer(x, attn_mask=attn_mask)
        if t.cls_emb is not None:
            return t.ln_final(text_global_pool(x, pool_type="last"))
        return text_global_pool(
            t.ln_final(x), ids, pool_type=t.pool_type, eos_token_id=getattr(t, "eos_id", None)
        )

    # the text tower in two halves (documented on EmbeddingModel, mirrored in mcip.models.text_split)
    def text_hidden_below(self, tokens: Tokens, n_last: int) -> torch.Tensor:
        return text_split.openclip_hidden_below(self, tokens, n_last)

    def text_features_from_hidden(self, hidden: torch.Tensor, tokens: Tokens, n_last: int) -> torch.Tensor:
        return text_split.openclip_from_hidden(self, hidden, tokens, n_last)

    def text_hidden_lengths(self, tokens: Tokens) -> torch.Tensor:
        return text_split.openclip_lengths(self, tokens)

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        proj = self._text_projection_attr()[1]
        if proj is None:
            return features
        if isinstance(proj, nn.Parameter):
            return features @ proj
        return proj(features)

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        return {"input_ids": self._tokenizer(list(texts))}

    # ------------------------------------------------------------------ parts
    def _text_projection_attr(self) -> tuple[str, Any]:
        if not self._custom_text:
            return "text_projection", self.net.text_projection
        t = self.net.text
        if hasattr(t, "text_projection"):
            return "text.text_projection", t.text_projection
        return "text.proj", getattr(t, "proj", None)

    def part_of(self, name: str) -> str:
        if name in ("logit_scale", "logit_bias"):
            return name
        if name.startswith("visual."):
            if (self._vit and name == "visual.proj") or (self._timm and prefix_match(name, ["visual.head"])):
                return "image_projector"
            return "image_encoder"
        if prefix_match(name, [self._text_projection_attr()[0]]):
            return "text_projector"
        return "text_encoder"

    def _text_blocks(self) -> tuple[str, nn.ModuleList]:
        if not self._custom_text:
            return "transformer.resblocks", self.net.transformer.resblocks
        t = self.net.text
        if hasattr(t, "pooler"):
            return _largest_module_list(t.transformer, "text.transformer")
        return "text.transformer.resblocks", t.transformer.resblocks

    def text_block_prefixes(self) -> list[str]:
        prefix, blocks = self._text_blocks()
        return [f"{prefix}.{i}" for i in range(len(blocks))]

    def text_final_norm_prefixes(self) -> list[str]:
        if not self._custom_text:
            return ["ln_final"]
        return ["text.ln_final"] if hasattr(self.net.text, "ln_final") else []

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.net.set_grad_checkpointing(enable)

    def image_groups(self) -> list[list[str]]:
        v = self.net.visual
        if self._timm:
            return super().image_groups()
        if self._vit:
            blocks = [f"transformer.resblocks.{i}" for i in range(len(v.transformer.resblocks))]
        else:  # ModifiedResNet: the three-convolution stem, four stages, attention pooling after them
            blocks = [name for name in ("layer1", "layer2", "layer3", "layer4") if hasattr(v, name)]
        groups = groups_around_blocks(v, "visual.", blocks)
        return [[n for n in g if self.part_of(n) == "image_encoder"] for g in groups]

    # ------------------------------------------------------------------ surgery
    def drop_image_projector(self) -> None:
        v = self.net.visual
        if self._vit:
            v.proj = None
        elif self._timm:
            v.head = nn.Identity()
        else:
            raise ConfigError(
                f"drop_projector is supported for open_clip ViT and timm image towers, not {type(v).__name__}."
            )
        self.modifications["drop_image_projector"] = True

    def replace_text_projector(self, out_dim: int, weight: torch.Tensor | None = None) -> None:
        name, old = self._text_projection_attr()
        in_dim = _projector_in_dim(old, self.net)
        ref = next(self.net.parameters())
        new = nn.Parameter(torch.empty(in_dim, out_dim, dtype=ref.dtype, device=ref.device))
        check_projector_weight(weight, in_dim, out_dim)
        if weight is not None:
            new.data.copy_(weight)
        else:
            nn.init.normal_(new, std=in_dim**-0.5)
        owner = self.net.text if self._custom_text else self.net
        setattr(owner, name.rsplit(".", 1)[-1], new)
        self.modifications["text_projector_out"] = out_dim

    @property
    def embed_dim(self) -> int:
        with torch.no_grad():
            probe = torch.zeros(1, self._image_feature_dim(), dtype=self.dtype, device=self.device)
            return int(self.project_image(probe).shape[-1])

    def _image_feature_dim(self) -> int:
        v = self.net.visual
        if self._vit:
            return int(v.proj.shape[0]) if v.proj is not None else int(v.transformer.width)
        if self._timm:
            return int(v.trunk.num_features)
        return int(v.output_dim)

    # named parts as attributes
    @property
    def image_encoder(self) -> nn.Module:
        return self.net.visual.trunk if self._timm else self.net.visual

    @property
    def image_projector(self):
        v = self.net.visual
        return v.proj if self._vit else (v.head if self._timm else None)

    @property
    def text_encoder(self) -> nn.Module:
        return self.net.text if self._custom_text else self.net.transformer

    @property
    def text_projector(self):
        return self._text_projection_attr()[1]

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.net.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return self.net.logit_bias


def _projector_in_dim(proj: Any, net: nn.Module) -> int:
    if isinstance(proj, nn.Parameter):
        return int(proj.shape[0])
    if isinstance(proj, nn.Linear):
        return int(proj.in_features)
    width = getattr(getattr(net, "text", net), "width", None) or getattr(net.transformer, "width", None)
    if width is None:
        raise ConfigError("Cannot determine the text feature width to build a new text projector.")
    return int(width)


def _largest_module_list(module: nn.Module, prefix: str) -> tuple[str, nn.ModuleList]:
    lists = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError(f"No transformer blocks found under {prefix}; cannot unlock text blocks.")
    name, blocks = max(lists, key=lambda nm: len(nm[1]))
    return f"{prefix}.{name}" if name else prefix, blocks


def _image_config(net: nn.Module) -> ImageConfig:
    pp = getattr(net.visual, "preprocess_cfg", None) or {}
    size = pp.get("size", getattr(net.visual, "image_size", 224))
    if isinstance(size, (tuple, list)):
        size = size[0]
    return ImageConfig(
        size=int(size),
        mean=tuple(pp.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(pp.get("std", (0.26862954, 0.26130258, 0.27577711))),
        interpolation=pp.get("interpolation", "bicubic"),
    )
