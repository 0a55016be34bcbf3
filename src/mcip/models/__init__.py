"""Dual-encoder models behind one protocol (:class:`EmbeddingModel`), loaded with :func:`load_model`."""

from mcip.models.base import PARTS, EmbeddingModel
from mcip.models.checkpoint import save_model
from mcip.models.factory import list_backends, list_presets, load_model
from mcip.models.fingerprint import IMAGE_PARTS, TEXT_PARTS, model_fingerprint
from mcip.models.freeze import (
    freeze_all,
    freeze_image_groups,
    set_trainable_parts,
    trainable_summary,
    unlock_last_text_blocks,
)

__all__ = [
    "IMAGE_PARTS",
    "PARTS",
    "TEXT_PARTS",
    "EmbeddingModel",
    "freeze_all",
    "freeze_image_groups",
    "list_backends",
    "list_presets",
    "load_model",
    "model_fingerprint",
    "save_model",
    "set_trainable_parts",
    "trainable_summary",
    "unlock_last_text_blocks",
]
