"""Choose what trains: by named part, and "only the last N text blocks" (SPEC section 2, Re-A)."""

from __future__ import annotations

from collections.abc import Iterable

from mcip.errors import ConfigError
from mcip.models.base import PARTS, EmbeddingModel, check_part, prefix_match


def set_trainable_parts(model: EmbeddingModel, parts: Iterable[str]) -> None:
    """``requires_grad=True`` for every parameter in ``parts``, False for all others."""
    wanted = set(parts)
    for part in wanted:
        check_part(part)
    for name, p in model.net.named_parameters():
        p.requires_grad_(model.part_of(name) in wanted)


def freeze_all(model: EmbeddingModel) -> None:
    model.net.requires_grad_(False)


def unlock_last_text_blocks(
    model: EmbeddingModel,
    n: int,
    final_norm: bool = True,
    projector: bool = True,
    logit_scale: bool = True,
) -> list[str]:
    """Freeze everything, then make trainable the last ``n`` text blocks, the text tower's final norm,
    the text projector and the logit scale (and bias). Returns the names of the trainable parameters.

    ``n=0`` leaves only the norm/projector/scale; ``n`` may not exceed the number of blocks.
    """
    blocks = model.text_block_prefixes()
    if not 0 <= n <= len(blocks):
        raise ConfigError(f"Cannot unlock the last {n} text blocks: the text tower has {len(blocks)} blocks.")
    prefixes = blocks[len(blocks) - n :] if n else []
    if final_norm:
        prefixes += model.text_final_norm_prefixes()
    parts = {"text_projector"} if projector else set()
    if logit_scale:
        parts |= {"logit_scale", "logit_bias"}
    trainable = []
    for name, p in model.net.named_parameters():
        on = prefix_match(name, prefixes) or model.part_of(name) in parts
        p.requires_grad_(on)
        if on:
            trainable.append(name)
    return trainable


def trainable_summary(model: EmbeddingModel) -> dict[str, tuple[int, int]]:
    """Per part: (trainable scalars, total scalars)."""
    out = {part: (0, 0) for part in PARTS}
    for name, p in model.net.named_parameters():
        part = model.part_of(name)
        t, n = out[part]
        out[part] = (t + (p.numel() if p.requires_grad else 0), n + p.numel())
    return out
