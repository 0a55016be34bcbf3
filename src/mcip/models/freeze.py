"""Choose what trains: by named part, "only the last N text blocks" (SPEC section 2, Re-A) and "not the
first N image groups" (``freeze_image_groups``, the image stages)."""

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


def freeze_image_groups(model: EmbeddingModel, n: int) -> list[str]:
    """Freeze the image encoder's first ``n`` parameter groups, input side first (the stem, then one
    group per block or stage: :meth:`EmbeddingModel.image_groups`). Nothing before them trains, so
    the backward pass stops at the first trainable group: a step skips the frozen blocks' backward
    (their forward still runs; the augmented pixels differ at every step). Returns the frozen names.

    ``n=0`` changes nothing; ``n`` must leave at least one group trainable.
    """
    if n < 0:
        raise ConfigError(f"freeze_image_groups must be >= 0, got {n}.")
    if n == 0:
        return []
    groups = model.image_groups()
    if n >= len(groups):
        raise ConfigError(
            f"Cannot freeze the first {n} image groups: the image encoder has {len(groups)} "
            f"(the stem and {len(groups) - 1} blocks or stages); use at most {len(groups) - 1}."
        )
    frozen = [name for group in groups[:n] for name in group]
    params = dict(model.net.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return frozen


def trainable_summary(model: EmbeddingModel) -> dict[str, tuple[int, int]]:
    """Per part: (trainable scalars, total scalars)."""
    out = {part: (0, 0) for part in PARTS}
    for name, p in model.net.named_parameters():
        part = model.part_of(name)
        t, n = out[part]
        out[part] = (t + (p.numel() if p.requires_grad else 0), n + p.numel())
    return out
