"""mcip: fine-tune CLIP-style models for image-to-image search while keeping their text alignment.

Implements Schall et al., "Optimizing CLIP Models for Image Retrieval with Maintained Joint-Embedding
Alignment" (SISAP 2024): 2SFT and MCIP.
"""

from mcip.errors import ConfigError, InputError, MCIPError, MissingDependencyError, ModelLoadError
from mcip.losses import create_loss, list_losses
from mcip.models import (
    PARTS,
    EmbeddingModel,
    list_backends,
    list_presets,
    load_model,
    save_model,
    set_trainable_parts,
    unlock_last_text_blocks,
)

__version__ = "0.1.0"

_LAZY = {
    "build_index": "mcip.index",
    "SearchIndex": "mcip.index",
    "evaluate": "mcip.eval.evaluate",
    "run_lab": "mcip.experiment.lab",
}


def __getattr__(name: str):
    """``mcip.build_index``, ``mcip.SearchIndex``, ``mcip.evaluate``, ``mcip.run_lab`` without importing FAISS
    or the benchmarks at start-up."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mcip' has no attribute {name!r}")


__all__ = [
    "PARTS",
    "ConfigError",
    "EmbeddingModel",
    "InputError",
    "MCIPError",
    "MissingDependencyError",
    "ModelLoadError",
    "SearchIndex",
    "__version__",
    "build_index",
    "create_loss",
    "evaluate",
    "list_backends",
    "list_losses",
    "list_presets",
    "load_model",
    "run_lab",
    "save_model",
    "set_trainable_parts",
    "unlock_last_text_blocks",
]
