"""A text tower run in two halves: the frozen lower blocks once (Re-A caches them), the last blocks per step.

For every backend, with ``k = num_blocks - n_last``:

- ``*_hidden_below(model, tokens, n_last)``: tokens (B, L) -> (B, L, F_hidden), the token states that enter
  block ``k`` (the embeddings and blocks ``0..k-1``; with ``n_last=0`` the last block's output, before
  the final norm).
- ``*_from_hidden(model, hidden, tokens, n_last)``: blocks ``k..`` + the final norm + the pooling ->
  (B, F_txt), so ``from_hidden(hidden_below(t, n), t, n) == model.text_features(t)`` (float tolerance).
- ``*_lengths(model, tokens)``: (B,) the leading positions of each row that ``from_hidden`` needs. The
  positions after them never reach those (causal or key-padding masks) nor the pooled token, so a cache
  may drop them and re-pad a batch with zeros (hidden states, ``input_ids``, ``attention_mask``).

Each mirrors its library's own forward: the same embedding, mask functions, block calls (with activation
checkpointing where the library does it) and pooling; ``tests/models/test_contract.py`` checks every
backend. What a backend cannot split raises :class:`mcip.errors.UnsupportedError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mcip.errors import ConfigError, UnsupportedError
from mcip.models.pooling import pool_tokens

if TYPE_CHECKING:
    from mcip.models.base import EmbeddingModel, Tokens

COMPOSED_TYPES = ("bert", "roberta", "xlm-roberta")  # BERT-style encoders: embeddings -> masked blocks
FALLBACK = "set realign_text_cache=false (the full text tower runs every step)"


def split_blocks(model: EmbeddingModel, n_last: int) -> tuple[list[nn.Module], int]:
    """The text blocks (input side first) and ``k``, the index of the first of the last ``n_last``."""
    blocks = [model.net.get_submodule(p) for p in model.text_block_prefixes()]
    if not 0 <= n_last <= len(blocks):
        raise ConfigError(f"n_last must be in 0..{len(blocks)} (the text tower's blocks), got {n_last}.")
    return blocks, len(blocks) - n_last


def full_lengths(tokens: Tokens) -> Tensor:
    """(B,) every position of each row (no trimming)."""
    ids = tokens["input_ids"]
    return torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=ids.device)


def mask_lengths(tokens: Tokens) -> Tensor:
    """(B,) the last attended position + 1 (all of them without an attention mask)."""
    mask = tokens.get("attention_mask")
    if mask is None:
        return full_lengths(tokens)
    pos = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (pos * (mask != 0)).amax(dim=1).long()


def _tensor(out) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


# ------------------------------------------------------------------ transformers (hf: and composed:)
def _masking_utils():
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        raise UnsupportedError(
            f"Splitting a transformers text tower needs transformers>=5 (installed {transformers.__version__}); "
            f"upgrade it, or {FALLBACK}."
        )
    from transformers import masking_utils

    return masking_utils


def _hf_mask(model: EmbeddingModel, hidden: Tensor, tokens: Tokens):
    """The attention mask ``text_model.forward`` builds: causal for CLIP, bidirectional for SigLIP."""
    mu, tm = _masking_utils(), model.net.text_model
    mask = tokens.get("attention_mask")
    if model._siglip:
        return mu.create_bidirectional_mask(config=tm.config, inputs_embeds=hidden, attention_mask=mask)
    return mu.create_causal_mask(config=tm.config, inputs_embeds=hidden, attention_mask=mask, cache=None)


def _hf_blocks(model: EmbeddingModel, blocks, hidden: Tensor, mask) -> Tensor:
    extra = {} if model._siglip else {"is_causal": True}  # what CLIPTextModel passes its encoder
    for layer in blocks:
        hidden = _tensor(layer(hidden, mask, **extra))
    return hidden


def hf_hidden_below(model: EmbeddingModel, tokens: Tokens, n_last: int) -> Tensor:
    blocks, k = split_blocks(model, n_last)
    hidden = model.net.text_model.embeddings(input_ids=tokens["input_ids"])
    return _hf_blocks(model, blocks[:k], hidden, _hf_mask(model, hidden, tokens))


def hf_from_hidden(model: EmbeddingModel, hidden: Tensor, tokens: Tokens, n_last: int) -> Tensor:
    blocks, k = split_blocks(model, n_last)
    tm = model.net.text_model
    x = tm.final_layer_norm(_hf_blocks(model, blocks[k:], hidden, _hf_mask(model, hidden, tokens)))
    if model._siglip:  # SigLIP pools the last position (often padding)
        return x[:, -1, :]
    return x[torch.arange(x.shape[0], device=x.device), _clip_eos(tm, tokens["input_ids"]).to(x.device)]


def _clip_eos(tm: nn.Module, ids: Tensor) -> Tensor:
    """(B,) the position CLIPTextModel pools: argmax id (legacy eos_token_id == 2) or the first eos."""
    ids = ids.to(torch.int)
    if tm.eos_token_id == 2:
        return ids.argmax(dim=-1)
    return (ids == tm.eos_token_id).int().argmax(dim=-1)


def hf_lengths(model: EmbeddingModel, tokens: Tokens) -> Tensor:
    if model._siglip:
        return full_lengths(tokens)
    return _clip_eos(model.net.text_model, tokens["input_ids"]).long() + 1  # causal: later ones unseen


def _composed_text(model: EmbeddingModel) -> nn.Module:
    text = model.net.text
    kind = getattr(text.config, "model_type", "?")
    if kind not in COMPOSED_TYPES or text.config.is_decoder or not hasattr(text, "embeddings"):
        raise UnsupportedError(
            f"Cached text hidden states support BERT-style text towers ({', '.join(COMPOSED_TYPES)}), "
            f"not '{kind}'; {FALLBACK}."
        )
    return text


def _composed_mask(text: nn.Module, hidden: Tensor, tokens: Tokens):
    mu = _masking_utils()
    return mu.create_bidirectional_mask(
        config=text.config, inputs_embeds=hidden, attention_mask=tokens.get("attention_mask")
    )


def composed_hidden_below(model: EmbeddingModel, tokens: Tokens, n_last: int) -> Tensor:
    text = _composed_text(model)
    blocks, k = split_blocks(model, n_last)
    hidden = text.embeddings(input_ids=tokens["input_ids"], token_type_ids=tokens.get("token_type_ids"))
    mask = _composed_mask(text, hidden, tokens)
    for layer in blocks[:k]:
        hidden = _tensor(layer(hidden, mask))
    return hidden


def composed_from_hidden(model: EmbeddingModel, hidden: Tensor, tokens: Tokens, n_last: int) -> Tensor:
    text = _composed_text(model)
    blocks, k = split_blocks(model, n_last)
    mask = _composed_mask(text, hidden, tokens)
    for layer in blocks[k:]:
        hidden = _tensor(layer(hidden, mask))
    pool_mask = tokens.get("attention_mask")
    if pool_mask is None:
        pool_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    return pool_tokens(hidden, pool_mask, model.net.pooling)


# ------------------------------------------------------------------ open_clip
def _oc_text(model: EmbeddingModel) -> nn.Module:
    """The module holding the text tower's attributes: the CLIP itself, or its TextTransformer."""
    if not model._custom_text:
        return model.net
    t = model.net.text
    if hasattr(t, "pooler") or getattr(t, "cls_emb", None) is not None:
        kind = "a Hugging Face text tower" if hasattr(t, "pooler") else "a class token (CoCa)"
        raise UnsupportedError(
            f"Cached text hidden states do not support open_clip text with {kind}; {FALLBACK}."
        )
    return t


def _oc_mask(model: EmbeddingModel, ids: Tensor, dtype: torch.dtype) -> Tensor | None:
    """The attention mask open_clip uses for ``ids`` (B, L): causal, and/or key padding (TextTransformer)."""
    t = _oc_text(model)
    seq = ids.shape[1]
    causal = t.attn_mask[:seq, :seq] if t.attn_mask is not None else None
    if model._custom_text and t.use_pad_mask:
        pad = t._build_additive_mask(ids, seq, dtype)
        return pad if causal is None else causal.unsqueeze(0) + pad
    return causal


def _oc_blocks(model: EmbeddingModel, blocks, x: Tensor, mask: Tensor | None) -> Tensor:
    """open_clip ``Transformer.forward`` over ``blocks`` (batch-first handling, activation checkpointing)."""
    from torch.utils.checkpoint import checkpoint

    tr = _oc_text(model).transformer
    if not tr.batch_first:
        x = x.transpose(0, 1).contiguous()
    for r in blocks:
        if tr.grad_checkpointing:
            x = checkpoint(r, x, None, None, mask, use_reentrant=False)
        else:
            x = r(x, attn_mask=mask)
    return x if tr.batch_first else x.transpose(0, 1)


def openclip_hidden_below(model: EmbeddingModel, tokens: Tokens, n_last: int) -> Tensor:
    t = _oc_text(model)
    blocks, k = split_blocks(model, n_last)
    ids = tokens["input_ids"]
    cast = t.transformer.get_cast_dtype()
    x = t.token_embedding(ids).to(cast) + t.positional_embedding[: ids.shape[1]].to(cast)
    return _oc_blocks(model, blocks[:k], x, _oc_mask(model, ids, x.dtype))


def openclip_from_hidden(model: EmbeddingModel, hidden: Tensor, tokens: Tokens, n_last: int) -> Tensor:
    from open_clip.transformer import text_global_pool

    t = _oc_text(model)
    blocks, k = split_blocks(model, n_last)
    ids = tokens["input_ids"]
    x = t.ln_final(_oc_blocks(model, blocks[k:], hidden, _oc_mask(model, ids, hidden.dtype)))
    if model._custom_text:
        return text_global_pool(x, ids, pool_type=t.pool_type, eos_token_id=getattr(t, "eos_id", None))
    return text_global_pool(x, ids, t.text_pool_type, eos_token_id=getattr(t, "text_eos_id", None))


def openclip_lengths(model: EmbeddingModel, tokens: Tokens) -> Tensor:
    """Causal towers pooling one token need positions up to it; anything else needs every position."""
    t = _oc_text(model)
    ids = tokens["input_ids"]
    causal = t.attn_mask is not None and not (model._custom_text and t.use_pad_mask)
    pool = t.pool_type if model._custom_text else t.text_pool_type
    eos = getattr(t, "eos_id" if model._custom_text else "text_eos_id", None)
    if not causal or pool not in ("argmax", "eos", "first") or (pool == "eos" and eos is None):
        return full_lengths(tokens)
    if pool == "first":
        return torch.ones(ids.shape[0], dtype=torch.long, device=ids.device)
    index = ids.argmax(dim=-1) if pool == "argmax" else (ids == eos).int().argmax(dim=-1)
    return index.long() + 1
