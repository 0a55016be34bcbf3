"""The one protocol every backend implements: a dual encoder with a joint, L2-normalised embedding.

An :class:`EmbeddingModel` wraps a backend network ``self.net`` (an open_clip model, a transformers
CLIP/SigLIP model, or mcip's composed model). Parameter names are those of ``net``, so an open_clip
model saved by mcip is still an open_clip state dict.

Every parameter belongs to exactly one named part (``PARTS``). Freezing, optimiser groups and the
training stages all work on these parts:

- ``image_encoder``   the image tower up to its pooled features, (B, F_img)
- ``image_projector`` the map from pooled image features to the joint space (may be empty)
- ``text_encoder``    the text tower up to its pooled features, (B, F_txt)
- ``text_projector``  the map from pooled text features to the joint space
- ``logit_scale``     log inverse temperature;  ``logit_bias`` (SigLIP only)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mcip.errors import ConfigError, InputError, UnsupportedError
from mcip.models.transforms import ImageConfig, eval_transform, train_transform

PARTS = ("image_encoder", "image_projector", "text_encoder", "text_projector", "logit_scale", "logit_bias")

Tokens = dict[str, torch.Tensor]


class EmbeddingModel(nn.Module, ABC):
    """A CLIP-style dual encoder. Subclasses implement the abstract methods; everything else is shared."""

    backend: ClassVar[str]

    def __init__(self, net: nn.Module, image_config: ImageConfig, spec: str) -> None:
        super().__init__()
        self.net = net
        self.image_config = image_config
        self.spec = spec
        self._freeze_bn_stats = False
        self.pixel_format = torch.contiguous_format  # the memory format image batches are given in
        # Architecture changes made after construction; saved with the model and replayed on load.
        self.modifications: dict[str, Any] = {}

    # ----------------------------------------------------------------- backend hooks
    @abstractmethod
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> (B, F_img) pooled features, before the image projector."""

    @abstractmethod
    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F_img) -> (B, D), unnormalised joint embedding."""

    @abstractmethod
    def text_features(self, tokens: Tokens) -> torch.Tensor:
        """Tokenizer output -> (B, F_txt) pooled features, before the text projector."""

    @abstractmethod
    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F_txt) -> (B, D), unnormalised joint embedding."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> Tokens:
        """List of B strings -> dict of (B, L) tensors (``input_ids`` and, where used, ``attention_mask``)."""

    @abstractmethod
    def part_of(self, name: str) -> str:
        """The part (one of ``PARTS``) that owns parameter ``name`` (a name in ``self.net``)."""

    @abstractmethod
    def text_block_prefixes(self) -> list[str]:
        """Parameter-name prefixes of the text transformer blocks, input side first."""

    @abstractmethod
    def text_final_norm_prefixes(self) -> list[str]:
        """Parameter-name prefixes of the text tower's final normalisation layer(s)."""

    @abstractmethod
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in both towers (where the backend supports it)."""

    @abstractmethod
    def drop_image_projector(self) -> None:
        """Use pooled image features as the embedding (the ICMR'23 GPR-FT variant); D becomes F_img."""

    @abstractmethod
    def replace_text_projector(self, out_dim: int, weight: torch.Tensor | None = None) -> None:
        """New text projector F_txt -> ``out_dim`` (e.g. to match a dropped image projector).

        ``weight`` (F_txt, out_dim) initialises it (e.g. a least-squares fit); random otherwise.
        """

    @abstractmethod
    def build_info(self, asset_dir: Path) -> dict[str, Any]:
        """JSON-serialisable description that rebuilds this architecture (random weights) via
        ``from_build_info``; may write tokenizer files and the like into ``asset_dir``."""

    @classmethod
    @abstractmethod
    def from_build_info(cls, info: dict[str, Any], asset_dir: Path, spec: str) -> EmbeddingModel:
        """Rebuild the architecture described by ``build_info`` (weights are loaded afterwards)."""

    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """D, the width of the joint embedding."""

    # ----------------------------------------------------------------- the text tower in two halves
    # Optional (Re-A caches the frozen lower blocks, mcip.stages.text_cache); see mcip.models.text_split.
    def text_hidden_below(self, tokens: Tokens, n_last: int) -> torch.Tensor:
        """Tokenizer output (B, L) -> (B, L, F_hidden): the token states entering the first of the last
        ``n_last`` text blocks (embeddings + the lower blocks; ``n_last=0``: the last block's output,
        before the final norm). Raises :class:`mcip.errors.UnsupportedError` where not implemented."""
        raise UnsupportedError(
            f"The {self.backend} backend cannot split its text tower; set realign_text_cache=false."
        )

    def text_features_from_hidden(self, hidden: torch.Tensor, tokens: Tokens, n_last: int) -> torch.Tensor:
        """(B, L, F_hidden) states from :meth:`text_hidden_below` + the same tokens -> (B, F_txt): the last
        ``n_last`` blocks, the final norm and the pooling, so that
        ``text_features_from_hidden(text_hidden_below(t, n), t, n) == text_features(t)``."""
        raise UnsupportedError(
            f"The {self.backend} backend cannot split its text tower; set realign_text_cache=false."
        )

    def text_hidden_lengths(self, tokens: Tokens) -> torch.Tensor:
        """(B,) how many leading positions of each row :meth:`text_features_from_hidden` needs; the rest
        may be dropped and a batch re-padded with zeros (hidden states and every token tensor)."""
        ids = tokens["input_ids"]
        return torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=ids.device)

    # ----------------------------------------------------------------- the image tower in groups
    def image_groups(self) -> list[list[str]]:
        """The image encoder's parameter names (names in ``self.net``) in groups, input side first: the
        stem (patch or convolutional embedding), then one group per block or stage; what follows the last
        block (its final norm, a pooling head) belongs to the last group. ``freeze_image_groups`` freezes
        the first N (open_clip's ``lock_image_unlocked_groups`` counts the same groups from the other
        end). This default reads a timm image encoder's ``group_matcher``; backends with other encoders
        override it. Raises :class:`mcip.errors.UnsupportedError` where the groups are unknown."""
        encoder = self.image_encoder
        prefix = _module_prefix(self.net, encoder)
        if prefix is None or not hasattr(encoder, "group_matcher"):
            raise UnsupportedError(
                f"The {self.backend} backend's image encoder ({type(encoder).__name__}) has no known block "
                "groups; set freeze_image_groups=0."
            )
        from timm.models._manipulate import group_parameters

        groups = group_parameters(encoder, encoder.group_matcher(coarse=True))
        return [[prefix + n for n in names] for names in groups.values()]

    # ----------------------------------------------------------------- shared behaviour
    def _image_convs(self) -> list[nn.Conv2d]:
        return [
            m
            for name, m in self.net.named_modules()
            if isinstance(m, nn.Conv2d) and self.part_of(f"{name}.weight") == "image_encoder"
        ]

    def image_conv_layers(self) -> int:
        """How many 2-D convolutions the image tower has (1 for a ViT's patch embedding)."""
        return len(self._image_convs())

    def use_channels_last(self, enable: bool = True) -> bool:
        """Keep the image tower's convolutions and its input batches in the channels-last (NHWC) memory
        format, which oneDNN's CPU convolutions (and cuDNN's under mixed precision) run fastest in. Same
        computation, other kernels: embeddings agree with the default format to float rounding. Only
        for convolutional towers (more than one Conv2d; a ViT is left as is). Returns whether it is on."""
        convs = self._image_convs()
        enable = enable and len(convs) > 1
        fmt = torch.channels_last if enable else torch.contiguous_format
        for m in convs:
            m.to(memory_format=fmt)
        self.pixel_format = fmt
        return enable

    def computation(self) -> dict[str, Any]:
        """What the computation depends on beyond the weights, image preprocessing and surgery (in the
        fingerprint: equal weights computing differently must not share caches or pass an index's
        check). Empty by default; a key is added only where it differs from the default, so existing
        fingerprints stay valid."""
        return {}

    def apply_modifications(self, mods: dict[str, Any]) -> None:
        """Replay recorded surgery (``drop_image_projector``, ``text_projector_out``) on a fresh build."""
        if mods.get("drop_image_projector"):
            self.drop_image_projector()
        if "text_projector_out" in mods:
            self.replace_text_projector(int(mods["text_projector_out"]))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    @property
    def image_size(self) -> int:
        return self.image_config.size

    @property
    def eval_transform(self):
        """PIL image -> (3, S, S) tensor for evaluation and indexing."""
        return eval_transform(self.image_config)

    @property
    def train_transform(self):
        """PIL image -> (3, S, S) tensor with the paper's training augmentation."""
        return train_transform(self.image_config)

    def encode_image(self, images: torch.Tensor | Sequence, normalize: bool = True) -> torch.Tensor:
        """Images -> (B, D) joint embeddings, L2-normalised unless ``normalize=False``.

        ``images`` is a (B, 3, S, S) tensor already transformed, or a sequence of PIL images (the eval
        transform is applied).
        """
        pixels = self._as_pixels(images)
        emb = self.project_image(self.image_features(pixels))
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, texts: Sequence[str] | Tokens, normalize: bool = True) -> torch.Tensor:
        """Strings (or tokenizer output) -> (B, D) joint embeddings, L2-normalised unless told not to."""
        if isinstance(texts, str):
            raise InputError("encode_text expects a list of strings, got a single string; wrap it: [text].")
        tokens = texts if isinstance(texts, dict) else self.tokenize(list(texts))
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        emb = self.project_text(self.text_features(tokens))
        return F.normalize(emb, dim=-1) if normalize else emb

    def forward(
        self, pixels: torch.Tensor | None = None, tokens: Tokens | None = None, normalize: bool = True
    ) -> dict[str, torch.Tensor]:
        """Both towers in one call (what DDP wraps): ``{"image": (B, D), "text": (B', D)}`` for the
        inputs given, plus ``"logit_scale"`` (and ``"logit_bias"``) so a loss has all it needs."""
        out: dict[str, torch.Tensor] = {"logit_scale": self.logit_scale}
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        if pixels is not None:
            out["image"] = self.encode_image(pixels, normalize=normalize)
        if tokens is not None:
            out["text"] = self.encode_text(tokens, normalize=normalize)
        return out

    def _as_pixels(self, images: torch.Tensor | Sequence) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise InputError(
                    f"encode_image expects a (B, 3, H, W) tensor, got shape {tuple(images.shape)}; "
                    "apply model.eval_transform to each image and stack them."
                )
            pixels = images
        else:
            if len(images) == 0:
                raise InputError("encode_image got an empty list of images.")
            tf = self.eval_transform
            pixels = torch.stack([tf(im) for im in images])
        return pixels.to(device=self.device, dtype=self.dtype, memory_format=self.pixel_format)

    # ----------------------------------------------------------------- parts
    def named_part_parameters(self, part: str) -> dict[str, nn.Parameter]:
        """Parameters (name in ``net`` -> Parameter) that belong to ``part``."""
        check_part(part)
        return {n: p for n, p in self.net.named_parameters() if self.part_of(n) == part}

    def part_sizes(self) -> dict[str, int]:
        """Number of scalar parameters in each part."""
        sizes = dict.fromkeys(PARTS, 0)
        for n, p in self.net.named_parameters():
            sizes[self.part_of(n)] += p.numel()
        return sizes

    def has_logit_bias(self) -> bool:
        return bool(self.named_part_parameters("logit_bias"))

    # ----------------------------------------------------------------- BatchNorm statistics
    def freeze_bn_stats(self, enable: bool = True) -> None:
        """Keep BatchNorm running statistics fixed (BN layers stay in eval mode even in ``train()``)."""
        self._freeze_bn_stats = enable
        self.train(self.training)

    def train(self, mode: bool = True) -> EmbeddingModel:
        """``nn.Module.train``, except that BatchNorm layers stay in eval mode (running statistics fixed)
        under ``freeze_bn_stats`` and wherever their own parameters are all frozen (a frozen group or
        tower: frozen weights with moving statistics would not be frozen)."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and (self._freeze_bn_stats or _all_frozen(m)):
                m.eval()
        return self

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, embed_dim={self.embed_dim}, image_size={self.image_size}"


def check_projector_weight(weight: torch.Tensor | None, in_dim: int, out_dim: int) -> None:
    """A projector initialisation must be (F_txt, out_dim)."""
    if weight is not None and tuple(weight.shape) != (in_dim, out_dim):
        raise ConfigError(f"Text projector weight must be ({in_dim}, {out_dim}), got {tuple(weight.shape)}.")


def check_part(part: str) -> None:
    if part not in PARTS:
        raise ConfigError(f"Unknown model part '{part}'. Valid parts: {', '.join(PARTS)}.")


def prefix_match(name: str, prefixes: Sequence[str]) -> bool:
    """True when ``name`` equals a prefix or lies under it (``a.b`` matches ``a.b.weight``, not ``a.bc``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _module_prefix(root: nn.Module, module: nn.Module) -> str | None:
    """``"a.b."`` for the submodule ``module`` of ``root`` (``""`` for ``root`` itself), None if absent."""
    for name, m in root.named_modules():
        if m is module:
            return f"{name}." if name else ""
    return None


def groups_around_blocks(root: nn.Module, prefix: str, block_prefixes: Sequence[str]) -> list[list[str]]:
    """Parameter names of ``root`` (each written ``prefix + name``) in groups: everything registered
    before the first block (the stem), one group per block prefix (relative to ``root``), and everything
    after the last block added to the last group (a final norm, a pooling head). Registration order is
    the order of the forward pass in the encoders this serves (open_clip, transformers)."""
    stem: list[str] = []
    blocks: list[list[str]] = [[] for _ in block_prefixes]
    seen_block = False
    for name, _ in root.named_parameters():
        index = next((i for i, b in enumerate(block_prefixes) if name.startswith(b + ".")), None)
        if index is not None:
            blocks[index].append(prefix + name)
            seen_block = True
        elif seen_block:
            blocks[-1].append(prefix + name)
        else:
            stem.append(prefix + name)
    return [stem, *blocks] if stem else blocks


def _all_frozen(module: nn.Module) -> bool:
    """True when ``module`` has parameters and none of them trains."""
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)
