"""A content hash of a model (or of some of its parts), for caches keyed by "what produced these features".

Each fingerprint hashes the bytes of the weights it covers (about 1 GB/s here: 0.13 s for the lab's
text tower, seconds for a ViT-L). Where a model's weights are known not to change (an evaluation,
:func:`fingerprints_held`) each one is computed once; a model saved by mcip records the ones an
evaluation asks for (:func:`recorded_fingerprints`, written by ``save_model`` and trusted on load while
the weights file is the one written with them), so evaluating a saved row hashes nothing. The values
are the same either way (an index records them: they never change meaning).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch

from mcip.errors import ConfigError, UnsupportedError
from mcip.models.base import EmbeddingModel, check_part

IMAGE_PARTS = ("image_encoder", "image_projector")
TEXT_PARTS = ("text_encoder", "text_projector")
TEXT_PATH_PARTS = TEXT_PARTS
"""The parts whose parameters and buffers make a text embedding (``EmbeddingModel.part_of``)."""

_MEMO = "_mcip_fingerprints"


@contextmanager
def fingerprints_held(model: EmbeddingModel, known: dict[str, str] | None = None) -> Iterator[None]:
    """Within the block ``model``'s weights do not change (the caller promises it: an evaluation): each
    fingerprint of it is computed once. ``known``: fingerprints already computed (by memo key), such as
    those recorded when it was saved. Nested blocks share the outer one's memo."""
    if _MEMO in model.__dict__:
        yield
        return
    model.__dict__[_MEMO] = dict(known or {})
    try:
        yield
    finally:
        model.__dict__.pop(_MEMO, None)


def _memoised(model: EmbeddingModel, key: str, compute: Callable[[], str]) -> str:
    memo = model.__dict__.get(_MEMO)
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _parts_key(parts: Iterable[str] | None) -> str:
    return "model:" + (",".join(sorted(set(parts))) if parts is not None else "all")


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
    return _memoised(model, _parts_key(wanted), lambda: _model_fingerprint(model, wanted))


def _model_fingerprint(model: EmbeddingModel, wanted: set[str] | None) -> str:
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
    return _memoised(model, f"stem:{groups}", lambda: _image_stem_fingerprint(model, groups))


def _image_stem_fingerprint(model: EmbeddingModel, groups: int) -> str:
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


def _hash_tensors(model: EmbeddingModel, keep, head: dict) -> str:
    """blake2b (16 hex) of ``head`` and the name, dtype, shape and bytes of every parameter and buffer
    (non-persistent ones included) of ``model.net`` whose name ``keep`` accepts."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    tensors = dict(model.net.named_parameters()) | dict(model.net.named_buffers())
    for name in sorted(tensors):
        if not keep(name):
            continue
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensors[name].shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _text_head(model: EmbeddingModel) -> dict:
    return {
        "backend": model.backend,
        "class": type(model).__name__,
        "modifications": model.modifications,
        "pooling": str(getattr(model.net, "pooling", "")),
    }


def text_tower_fingerprint(model: EmbeddingModel) -> str:
    """Hex digest (16 chars) of what a text embedding depends on: the backend, the recorded surgery, the
    text pooling where the backend has one, and the name, dtype, shape and bytes of every parameter and
    buffer (non-persistent ones included) of :data:`TEXT_PATH_PARTS`. The image side and the model's folder
    do not enter it."""

    def compute() -> str:
        return _hash_tensors(model, lambda name: model.part_of(name) in TEXT_PATH_PARTS, _text_head(model))

    return _memoised(model, "text-tower", compute)


def lower_blocks_fingerprint(model: EmbeddingModel, n_last: int) -> str:
    """Hex digest of what the text states entering the last ``n_last`` blocks depend on: every
    ``text_encoder`` tensor except those of the last ``n_last`` blocks and of the final norm. Re-A trains
    only those (and the projector), so a Re-A model shares this digest with the model it started from."""
    return _memoised(model, f"lower:{n_last}", lambda: _lower_blocks_fingerprint(model, n_last))


def _lower_blocks_fingerprint(model: EmbeddingModel, n_last: int) -> str:
    above = model.text_block_prefixes()[len(model.text_block_prefixes()) - n_last :]
    above += model.text_final_norm_prefixes()

    def keep(name: str) -> bool:
        if model.part_of(name) != "text_encoder":
            return False
        return not any(name == p or name.startswith(p + ".") for p in above)

    return _hash_tensors(model, keep, _text_head(model) | {"n_last": n_last})


def recorded_fingerprints(model: EmbeddingModel) -> dict[str, str]:
    """The fingerprints an evaluation of ``model`` asks for, by memo key: its image tower (with and
    without the projector), its text tower and the text blocks below the last (where it has blocks).
    ``save_model`` records them; :func:`fingerprints_held` takes them back."""
    out = {
        _parts_key(IMAGE_PARTS): model_fingerprint(model, IMAGE_PARTS),
        _parts_key(("image_encoder",)): model_fingerprint(model, ("image_encoder",)),
        "text-tower": text_tower_fingerprint(model),
    }
    try:
        if len(model.text_block_prefixes()) >= 2:
            out["lower:1"] = lower_blocks_fingerprint(model, 1)
    except (ConfigError, UnsupportedError):  # no named text blocks
        pass
    return out


_SAVED = "_mcip_saved_fingerprints"


def _weights_token(model: EmbeddingModel) -> tuple:
    """Which tensors ``model`` holds and how often each was changed in place (``Tensor._version``)."""
    tensors = list(model.net.named_parameters()) + list(model.net.named_buffers())
    return tuple((n, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for n, t in tensors)


def attach_saved_fingerprints(model: EmbeddingModel, values, dtype: str | None) -> None:
    """Remember ``values`` (fingerprints recorded when ``model``'s weights were saved, by memo key) for
    :func:`saved_fingerprints`, as long as the weights stay the ones loaded in ``dtype``."""
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        return
    model.__dict__[_SAVED] = (dict(values), dtype, None)


def discard_saved_fingerprints(model: EmbeddingModel) -> None:
    """Forget the recorded fingerprints (the architecture changed after loading: another projector)."""
    model.__dict__.pop(_SAVED, None)


def seal_saved_fingerprints(model: EmbeddingModel) -> None:
    """Called by ``load_model`` once the model is in its final dtype and device: the recorded values
    stand for these tensors (and are dropped when the dtype is not the one saved)."""
    saved = model.__dict__.get(_SAVED)
    if saved is None:
        return
    values, dtype, _ = saved
    if dtype != str(model.dtype):
        model.__dict__.pop(_SAVED, None)
        return
    model.__dict__[_SAVED] = (values, dtype, _weights_token(model))


def saved_fingerprints(model: EmbeddingModel) -> dict[str, str] | None:
    """The fingerprints recorded with ``model``'s weights when it was saved, while it still holds the
    tensors it was loaded with, unchanged by in-place updates (an optimiser step, ``load_state_dict``,
    a merge); else None. (A write through ``tensor.data`` escapes the check: mcip does not write so.)"""
    saved = model.__dict__.get(_SAVED)
    if saved is None or saved[2] is None or saved[2] != _weights_token(model):
        return None
    return dict(saved[0])
