"""Dual-encoder models behind one protocol (:class:`EmbeddingModel`), loaded with :func:`load_model`."""

from mcip.models.base import PARTS, EmbeddingModel
from mcip.models.checkpoint import save_model
from mcip.models.factory import list_backends, load_model
from mcip.models.freeze import freeze_all, set_trainable_parts, trainable_summary, unlock_last_text_blocks

__all__ = [
    "PARTS",
    "EmbeddingModel",
    "freeze_all",
    "list_backends",
    "load_model",
    "save_model",
    "set_trainable_parts",
    "trainable_summary",
    "unlock_last_text_blocks",
]
