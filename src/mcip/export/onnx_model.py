"""An exported model run by onnxruntime: the parts of the :class:`~mcip.models.base.EmbeddingModel`
protocol that encoding and text queries use (``encode_image``, ``encode_text``, ``tokenize``,
``eval_transform``, ``embed_dim``, ``spec``), so :func:`mcip.embed.encode_images` and
:func:`mcip.embed.rank_by_text` take it as they take a PyTorch model. No training, no parts.

Its inputs are made only from the export folder (``preprocess.json``, the tokenizer files), never from the
PyTorch model, so the parity tests check the folder as a user gets it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcip.errors import ConfigError, InputError, UnsupportedError, require
from mcip.export.preprocess import image_config_of, read_preprocess
from mcip.export.tokenizer import load_tokenizer
from mcip.models.transforms import eval_transform

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
RUNTIMES = ("torch", "onnx")
"""What runs a model for ``--runtime``: PyTorch, or an export folder on onnxruntime (:class:`OnnxModel`)."""


def _onnxruntime():
    return require("onnxruntime", "onnx", "ONNX export and the onnxruntime runtime")


def _providers(device: str) -> list[str]:
    kind = str(device).split(":")[0]
    if kind not in PROVIDERS:
        raise ConfigError(f"The onnx runtime runs on {' or '.join(PROVIDERS)}, not {device!r}.")
    available = _onnxruntime().get_available_providers()
    if PROVIDERS[kind][0] not in available:
        raise ConfigError(
            f"onnxruntime here has no {PROVIDERS[kind][0]} (it has {', '.join(available)}); use --device cpu, "
            "or install onnxruntime-gpu for cuda."
        )
    return PROVIDERS[kind]


class OnnxModel:
    """The two graphs of an export folder (:mod:`mcip.export.preprocess`) in onnxruntime sessions.

    Args:
        folder: written by :func:`mcip.export.export_onnx`.
        device: ``cpu`` (default) or ``cuda`` (needs onnxruntime-gpu).
        threads: onnxruntime's intra-op threads (None: its default, one per core).
        spinning: whether idle onnxruntime threads spin-wait for the next run (its default: lower
            latency, but they hold the cores meanwhile, from PyTorch too).
    """

    backend = "onnx"

    def __init__(
        self,
        folder: str | os.PathLike,
        device: str = "cpu",
        threads: int | None = None,
        spinning: bool = True,
    ) -> None:
        ort = _onnxruntime()
        self.folder = Path(folder)
        self.config = read_preprocess(self.folder)
        self.image_config = image_config_of(self.config["image"])
        self.spec = str(self.folder)
        self.source: dict[str, Any] = self.config["source"]
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = _providers(device)
        self._image = ort.InferenceSession(
            str(self.folder / self.config["image"]["graph"]), options, providers=providers
        )
        self._text = ort.InferenceSession(
            str(self.folder / self.config["text"]["graph"]), options, providers=providers
        )
        self._tokenize = load_tokenizer(self.folder, self.config["text"]["tokenizer"])
        self.device = torch.device("cpu")  # outputs come back as CPU tensors whatever runs the graphs
        self.dtype = torch.float32
        self.pixel_format = torch.contiguous_format

    # ----------------------------------------------------------------- what encoders read
    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @property
    def image_size(self) -> int:
        return self.image_config.size

    @property
    def eval_transform(self):
        """PIL image -> (3, S, S) tensor: the exported model's own eval transform (``preprocess.json``)."""
        return eval_transform(self.image_config)

    @property
    def image_fingerprint(self) -> str:
        """The exported PyTorch model's image-tower fingerprint (:func:`mcip.models.fingerprint.model_fingerprint`)."""
        return str(self.source["image_fingerprint"])

    @property
    def text_fingerprint(self) -> str:
        return str(self.source["text_fingerprint"])

    # ----------------------------------------------------------------- the graphs
    def run_image(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 normalised pixels -> (B, D) float32 unit embeddings."""
        return self._image.run(None, {self.config["image"]["input"]: pixels})[0]

    def run_text(self, tokens: dict[str, np.ndarray]) -> np.ndarray:
        """The tokenizer's (B, L) int64 arrays -> (B, D) float32 unit embeddings."""
        return self._text.run(None, {name: tokens[name] for name in self.config["text"]["inputs"]})[0]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """B strings -> the text graph's inputs as (B, L) int64 tensors (the export's tokenizer rules)."""
        if isinstance(texts, str):
            raise InputError("tokenize expects a list of strings, got a single string; wrap it: [text].")
        return {k: torch.from_numpy(v) for k, v in self._tokenize(list(texts)).items()}

    def encode_image(self, images: torch.Tensor | Sequence, normalize: bool = True) -> torch.Tensor:
        """A (B, 3, S, S) tensor already transformed, or PIL images -> (B, D) float32 unit embeddings."""
        _only_normalised(normalize)
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
                raise InputError(
                    f"encode_image expects a (B, 3, {self.image_size}, {self.image_size}) tensor, got shape "
                    f"{tuple(images.shape)}; apply model.eval_transform to each image and stack them."
                )
            pixels = images.detach().to("cpu", torch.float32).contiguous().numpy()
        else:
            if len(images) == 0:
                raise InputError("encode_image got an empty list of images.")
            pixels = torch.stack([self.eval_transform(im) for im in images]).numpy()
        return torch.from_numpy(self.run_image(pixels))

    def encode_text(self, texts: Sequence[str] | dict, normalize: bool = True) -> torch.Tensor:
        """Strings (or :meth:`tokenize` output) -> (B, D) float32 unit embeddings."""
        _only_normalised(normalize)
        if isinstance(texts, str):
            raise InputError("encode_text expects a list of strings, got a single string; wrap it: [text].")
        tokens = texts if isinstance(texts, dict) else self.tokenize(list(texts))
        arrays = {
            k: np.asarray(v.cpu() if torch.is_tensor(v) else v, dtype=np.int64) for k, v in tokens.items()
        }
        return torch.from_numpy(self.run_text(arrays))

    def eval(self) -> OnnxModel:
        return self

    def __repr__(self) -> str:
        return (
            f"OnnxModel({str(self.folder)!r}, source={self.source.get('spec')!r}, embed_dim={self.embed_dim})"
        )


def _only_normalised(normalize: bool) -> None:
    if not normalize:
        raise UnsupportedError(
            "An ONNX export's graphs end in the L2 normalisation; unnormalised embeddings need the PyTorch model."
        )


def load_onnx_model(
    folder: str | os.PathLike, device: str = "cpu", threads: int | None = None, spinning: bool = True
) -> OnnxModel:
    """Open an export folder for encoding (see :class:`OnnxModel`)."""
    return OnnxModel(folder, device=device, threads=threads, spinning=spinning)


def check_runtime(runtime: str) -> None:
    """``runtime`` is one of :data:`RUNTIMES` (``ConfigError`` naming them otherwise)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"Unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
