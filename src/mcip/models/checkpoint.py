"""mcip's model format: a directory with the weights and a JSON that says how to rebuild the model.

    MODEL_DIR/
      mcip_model.json     {"format": "mcip-model", "version": 1, "backend": ..., "spec": ..., "build": {...},
                           "fingerprints": {...}}
      model.safetensors   the state dict of ``model.net`` (for open_clip models: an open_clip state dict)
      assets/             tokenizer files and the like, written by the backend

Writes are atomic: everything goes to a temporary sibling directory that replaces the target at the end,
so an interrupted save never leaves a half-written model behind.

``fingerprints`` records what :func:`mcip.models.fingerprint.recorded_fingerprints` computed from the
weights written, with the weights file's size and modification time and the weights' dtype: a model
loaded from a folder whose weights file is still that one (and kept in that dtype) is evaluated without
hashing its weights again. Older folders without it load as before.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mcip._io import atomic_dir
from mcip.errors import ModelLoadError
from mcip.models.base import EmbeddingModel
from mcip.models.fingerprint import attach_saved_fingerprints, recorded_fingerprints

FORMAT = "mcip-model"
VERSION = 1
META_FILE = "mcip_model.json"
WEIGHTS_FILE = "model.safetensors"
ASSET_DIR = "assets"


def is_mcip_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


def save_model(model: EmbeddingModel, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to directory ``path`` (replaced atomically if it exists). Returns the path.

    ``extra`` is stored under ``"extra"`` in the JSON (e.g. the training run that produced it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(path) as tmp:
        (tmp / ASSET_DIR).mkdir()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "backend": model.backend,
            "spec": model.spec,
            "embed_dim": model.embed_dim,
            "build": model.build_info(tmp / ASSET_DIR),
            "modifications": dict(model.modifications),
            "extra": extra or {},
        }
        state = {k: v.detach().contiguous().cpu() for k, v in model.net.state_dict().items()}
        save_file(_unshare(state), str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        meta["fingerprints"] = {
            "weights": _file_stamp(tmp / WEIGHTS_FILE),
            "dtype": str(model.dtype),
            "values": recorded_fingerprints(model),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    return path


def _file_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): store each one separately."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        out[k] = v.clone() if ptr in seen else v
        seen.setdefault(ptr, k)
    return out


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise ModelLoadError(f"{path} is not an mcip model directory: {META_FILE} is missing.")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ModelLoadError(f"{meta_path} is not an mcip model description (format={meta.get('format')!r}).")
    if int(meta.get("version", 0)) > VERSION:
        raise ModelLoadError(
            f"{path} was written by a newer mcip (format version {meta['version']}); upgrade mcip to load it."
        )
    return meta


RANDOM_FILLERS = ("normal_", "uniform_")
"""The ``torch.Tensor`` methods that draw random values in place; :func:`random_init_skipped` makes them
write zeros. ``torch.nn.init``'s random initialisers (normal, uniform, truncated normal, Xavier, Kaiming,
orthogonal) all draw through them."""


@contextmanager
def random_init_skipped() -> Iterator[None]:
    """While an architecture is built only to receive a checkpoint's weights, tensors' random fills
    (:data:`RANDOM_FILLERS`) write zeros instead (a memset: no NaNs for an orthogonal init's QR to meet):
    drawing the lab's 27 M random weights took 0.23 s of a 0.37 s load. The caller must overwrite every
    persistent tensor afterwards (the load below refuses a checkpoint that misses one).

    The methods are swapped on ``torch.Tensor``, not ``torch.nn.init``'s functions: a library imported
    during the build that keeps references to those functions (transformers does) keeps the real ones.
    Another thread drawing random values in place at the same moment would get zeros, so nothing else
    should build models or draw during a load that skips the init."""
    saved = {name: torch.Tensor.__dict__.get(name) for name in RANDOM_FILLERS}

    def zeros(tensor, *args, **kwargs):
        return tensor.zero_()

    try:
        for name in RANDOM_FILLERS:
            setattr(torch.Tensor, name, zeros)
        yield
    finally:
        for name, method in saved.items():
            if method is None:  # inherited from torch._C.TensorBase: remove the override
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)


def load_mcip_checkpoint(
    path: str | os.PathLike, backends: dict[str, type[EmbeddingModel]], random_init: bool = True
) -> EmbeddingModel:
    """Rebuild the architecture from the JSON, then load the weights strictly. ``random_init=False``:
    build it without its random initialisation and without moving torch's generator (see
    :func:`mcip.models.load_model`)."""
    path = Path(path)
    meta = read_meta(path)
    backend = meta["backend"]
    if backend not in backends:
        raise ModelLoadError(f"{path} needs backend '{backend}', which this mcip does not have.")
    # Every persistent tensor is overwritten below (checked): the random fill is wasted work. It stays by
    # default because it moves torch's generator, and a seeded stage draws its loss head after the load.
    with contextlib.ExitStack() as build:
        if not random_init:
            build.enter_context(torch.random.fork_rng(devices=[]))
            build.enter_context(random_init_skipped())
        model = backends[backend].from_build_info(meta["build"], path / ASSET_DIR, spec=str(path))
        model.apply_modifications(meta.get("modifications", {}))
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{weights} is missing; the model directory is incomplete (copy it again).")
    state = load_file(str(weights))
    result = model.net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"The weights in {weights} do not match the architecture described in {META_FILE}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}. "
            "The directory may have been edited or mixed with another model's files."
        )
    model.eval()
    recorded = meta.get("fingerprints")
    if isinstance(recorded, dict) and recorded.get("weights") == _file_stamp(weights):
        attach_saved_fingerprints(model, recorded.get("values"), recorded.get("dtype"))
    return model
