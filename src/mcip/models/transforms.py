"""Image transforms shared by every backend.

SPEC section 5/6: evaluation resizes the shorter side to ``resize_ratio * S`` (1.125 by default) and
centre-crops ``S``; training resizes the same way, random-crops ``S``, flips horizontally and applies
colour jitter 0.4. Mean, std and interpolation come from the model. Both first refuse an image whose
resized size would be over ``ImageLimits.max_resized_pixels`` (:class:`CheckResize`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torchvision import transforms as T

from mcip.data.images import jpeg_draft_enabled

_INTERPOLATIONS = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class ImageConfig:
    """How a model wants its pixels: square side ``size`` (px), per-channel ``mean``/``std``."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_ratio: float = 1.125

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            from mcip.errors import ConfigError

            raise ConfigError(
                f"Unknown interpolation '{self.interpolation}'; use one of {sorted(_INTERPOLATIONS)}."
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageConfig:
        return cls(
            size=int(d["size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bicubic"),
            resize_ratio=float(d.get("resize_ratio", 1.125)),
        )


class CheckResize:
    """Passes an image through unchanged, or raises ``ImageRefused`` (a ValueError) when scaling its
    shorter side to ``shorter_side`` px would give more than ``limits.max_resized_pixels`` pixels
    (default: :func:`mcip.data.limits.default_image_limits`, read when called, so in loader workers too).
    """

    def __init__(self, shorter_side: int, limits=None) -> None:
        self.shorter_side = int(shorter_side)
        self.limits = limits

    def __call__(self, img):
        from mcip.data.limits import check_resize, default_image_limits

        size = (img.shape[-1], img.shape[-2]) if isinstance(img, torch.Tensor) else img.size  # (W, H)
        check_resize(tuple(size), self.shorter_side, self.limits or default_image_limits())
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shorter_side={self.shorter_side})"


def _to_rgb(img):
    """Any PIL image -> RGB; transparency is composited onto white (emoji, logos, product cut-outs)."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


DRAFT_OVERSAMPLING = 2
"""JPEG draft decoding (opt-in: ``MCIP_JPEG_DRAFT=1``) keeps at least this many pixels per output pixel
of the resize. It decodes large photos 2.4x faster, but the embeddings move (least cosine to full decoding
0.96 on ``benchmarks/encode.py``'s photos with the lab's model), so full decoding stays the default."""


class EvalTransform(T.Compose):
    """The eval transform, with ``draft_size``: twice the side its resize makes, so a JPEG can be decoded
    at a reduced scale that keeps both sides at least that large (:func:`mcip.data.images.open_image`)."""

    def __init__(self, transforms, draft_size: int | None) -> None:
        super().__init__(transforms)
        self.draft_size = draft_size


def eval_geometry(cfg: ImageConfig) -> EvalTransform:
    """PIL image -> (S, S) RGB PIL image: the eval transform up to its pixels (resize 1.125*S on the shorter
    side, centre crop S), before :func:`eval_to_tensor`. Its output is exact in 8 bits, so it can be cached
    (:mod:`mcip.image_pixels`)."""
    resized = round(cfg.resize_ratio * cfg.size)
    return EvalTransform(
        [
            CheckResize(resized),
            T.Lambda(_to_rgb),
            T.Resize(resized, interpolation=_INTERPOLATIONS[cfg.interpolation]),
            T.CenterCrop(cfg.size),
        ],
        draft_size=DRAFT_OVERSAMPLING * resized if jpeg_draft_enabled() else None,
    )


def eval_to_tensor(cfg: ImageConfig) -> T.Compose:
    """(S, S) RGB PIL image or (S, S, 3) uint8 array -> (3, S, S) float tensor: scale to [0, 1], normalise."""
    return T.Compose([T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])


def eval_transform(cfg: ImageConfig) -> EvalTransform:
    """PIL image -> (3, S, S) float tensor: resize 1.125*S (shorter side), centre crop S, normalise
    (:func:`eval_geometry`, then :func:`eval_to_tensor`)."""
    geometry = eval_geometry(cfg)
    return EvalTransform([*geometry.transforms, *eval_to_tensor(cfg).transforms], geometry.draft_size)


def train_transform(cfg: ImageConfig, color_jitter: float = 0.4, hflip: bool = True) -> T.Compose:
    """PIL image -> (3, S, S): resize 1.125*S, random crop S, horizontal flip, colour jitter, normalise."""
    resized = round(cfg.resize_ratio * cfg.size)
    steps = [
        CheckResize(resized),
        T.Lambda(_to_rgb),
        T.Resize(resized, interpolation=_INTERPOLATIONS[cfg.interpolation]),
        T.RandomCrop(cfg.size),
    ]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    if color_jitter > 0:
        steps.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps += [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]
    return T.Compose(steps)
