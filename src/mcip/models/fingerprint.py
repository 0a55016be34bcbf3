"""A content hash of a model (or of some of its parts), for caches keyed by "what produced these features"."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import torch

from mcip.models.base import EmbeddingModel, check_part

IMAGE_PARTS = ("image_encoder", "image_projector")
TEXT_PARTS = ("text_encoder", "text_projector")


def model_fingerprint(model: EmbeddingModel, parts: Iterable[str] | None = None) -> str:
    """Hex digest (16 chars) of the backend, image preprocessing, projector surgery, what the weights do not
    say about the computation (:meth:`EmbeddingModel.computation`: an activation) and the values of every
    parameter and buffer in ``parts`` (all parts when None).

    Two models with equal fingerprints for ``IMAGE_PARTS`` produce the same image embeddings; training
    only the text side leaves that fingerprint unchanged, which is what lets Re-A reuse cached image
    features.
    """
    wanted = set(parts) if parts is not None else None
    for part in wanted or ():
        check_part(part)
    h = hashlib.blake2b(digest_size=8)
    head = {
        "backend": model.backend,
        "image_config": model.image_config.to_dict(),
        "modifications": model.modifications,
        "parts": sorted(wanted) if wanted else "all",
        **model.computation(),  # what the weights alone do not say (open_clip's QuickGELU)
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for name, tensor in sorted(model.net.state_dict().items()):
        if wanted is not None and model.part_of(name) not in wanted:
            continue
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def image_stem_fingerprint(model: EmbeddingModel, groups: int) -> str:
    """Hex digest (16 chars) of what the image encoder's first ``groups`` groups compute
    (:mod:`mcip.models.image_split`): the backend, image preprocessing and :meth:`EmbeddingModel.computation`
    as in :func:`model_fingerprint`, the stem's modules as written (their types, kernels, strides and
    activations: two encoders with equal stem weights but another activation differ) and the values of
    their parameters and buffers (a BatchNorm's running statistics included). Models whose stems are equal
    share :func:`mcip.embed.cached_image_stem`."""
    from mcip.models.image_split import stem_modules

    modules = stem_modules(model, groups)
    h = hashlib.blake2b(digest_size=8)
    head = {
        "what": "image-stem",
        "groups": groups,
        "backend": model.backend,
        "image_config": model.image_config.to_dict(),
        **model.computation(),
        "modules": [f"{name}: {module!r}" for name, module in modules],
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for name, module in modules:
        for key, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}.{key}|{t.dtype}|{tuple(tensor.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
