"""What an ``openclip:`` spec names and how its weights load: the architecture and tag or file checks,
the strict loading of a state dict file, and what a file takes from the architecture's pretrained tags
(image normalisation, OpenAI's QuickGELU) so that it runs as when created with its tag and loaded over it."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from mcip.errors import ConfigError, ModelLoadError

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")


def _open_clip():
    import open_clip

    return open_clip


def parse_openclip_spec(rest: str) -> tuple[str, str | None]:
    """``ARCH[/PRETRAINED]`` -> (arch, pretrained). open_clip's ``hf-hub:``/``local-dir:`` pass through."""
    if rest.startswith(("hf-hub:", "local-dir:")):
        return rest, None
    arch, _, pretrained = rest.partition("/")
    return arch, (pretrained or None)


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.lower().endswith(_CHECKPOINT_SUFFIXES)


def _check_arch(arch: str) -> None:
    names = _open_clip().list_models()
    if arch in names:
        return
    close = difflib.get_close_matches(arch, names, n=5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown open_clip architecture '{arch}'.{hint} `mcip models --backend openclip` lists all "
        f"{len(names)}; a custom config can be registered with open_clip.add_model_config(path)."
    )


def _check_pretrained(arch: str, pretrained: str) -> str:
    """Return 'file' or 'tag'; fail with the fix when neither."""
    if Path(pretrained).expanduser().is_file():
        return "file"
    if _looks_like_path(pretrained):
        raise ModelLoadError(
            f"Checkpoint file not found: {pretrained}. Check the path (relative paths are resolved from "
            f"{Path.cwd()}), or pass a pretrained tag instead."
        )
    tags = _open_clip().list_pretrained_tags_by_model(arch)
    if pretrained in tags:
        return "tag"
    raise ConfigError(
        f"'{pretrained}' is neither a file nor a pretrained tag of open_clip '{arch}'. "
        f"Known tags: {', '.join(tags) or '(none)'}."
    )


def load_openclip_state_dict(net: nn.Module, path: str | Path) -> None:
    """Load a full open_clip state dict into ``net`` strictly, with a readable error on mismatch."""
    open_clip = _open_clip()
    try:
        open_clip.load_checkpoint(net, str(path), strict=True)
    except RuntimeError as exc:
        msg = str(exc)
        raise ModelLoadError(
            f"The checkpoint {path} does not match this architecture ({type(net).__name__}). "
            f"{_summarise_load_error(msg)} Check that the architecture in the spec is the one the "
            "checkpoint was trained with (MCIP-ViT-SO400M-14-SigLIP-384.pth needs "
            "openclip:ViT-SO400M-14-SigLIP-384/..., MCIP-ViT-L-14-336.pth openclip:ViT-L-14-336/...)."
        ) from exc


_PREPROCESS_KEYS = ("mean", "std", "interpolation")


def shared_tag_preprocess(arch: str) -> dict[str, Any]:
    """The image preprocessing (mean, std, interpolation) that every pretrained tag of ``arch`` shares, or
    {} when it has no tags or they disagree. A state dict loaded from a file is a fine-tune of one of those
    weights (``MCIP-ViT-SO400M-14-SigLIP-384.pth`` of ``webli``: mean and std 0.5), while open_clip gives a
    model built without a tag OpenAI's normalisation."""
    open_clip = _open_clip()
    tags = open_clip.list_pretrained_tags_by_model(arch)
    picked = [
        {k: cfg[k] for k in _PREPROCESS_KEYS if k in cfg}
        for cfg in (open_clip.get_pretrained_cfg(arch, tag) or {} for tag in tags)
    ]
    if not picked or any(p != picked[0] for p in picked):
        return {}
    return picked[0]


def shared_tag_quick_gelu(arch: str) -> bool:
    """Whether every pretrained tag of ``arch`` (at least one) builds it with OpenAI's QuickGELU: a state
    dict loaded from a file is then a fine-tune of such weights and needs that activation."""
    open_clip = _open_clip()
    tags = open_clip.list_pretrained_tags_by_model(arch)
    cfgs = [open_clip.get_pretrained_cfg(arch, tag) or {} for tag in tags]
    return bool(cfgs) and all(cfg.get("quick_gelu", False) for cfg in cfgs)


def uses_quick_gelu(net: nn.Module) -> bool:
    """Whether the open_clip network runs OpenAI's QuickGELU (``x * sigmoid(1.702 x)``) instead of GELU."""
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in net.modules())


def wants_quick_gelu(arch: str, pretrained: str | None, kind: str | None) -> bool:
    """Whether ``arch`` with ``pretrained`` (``kind`` ``"tag"`` or ``"file"``) must run QuickGELU: a tag
    whose weights were trained with it (OpenAI's: open_clip >= 3 only warns about the mismatch and builds
    GELU), or a file over an architecture whose tags all were (:func:`shared_tag_quick_gelu`)."""
    if kind == "tag":
        return bool((_open_clip().get_pretrained_cfg(arch, pretrained) or {}).get("quick_gelu", False))
    return kind == "file" and shared_tag_quick_gelu(arch)


def _summarise_load_error(msg: str, limit: int = 600) -> str:
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[:limit] + " ..."
