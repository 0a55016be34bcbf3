"""``evaluate_models``: every model on every benchmark, with embeddings cached per (model fingerprint,
benchmark files), so re-running a report only recomputes what changed.

All datasets are checked before any model is loaded. Unreadable images become zero embeddings (they
match nothing) and are counted in the result, never silently dropped; images a manifest lists but that are
absent on disk are left out by the adapter (``Images.skipped``) and counted as unreadable too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mcip.embed import cached_image_embeddings, default_cache_dir
from mcip.eval.benchmarks.base import (
    Benchmark,
    BenchmarkData,
    CaptionSet,
    DatasetMissingError,
    Images,
    KNNSet,
    RetrievalSet,
    RevisitedSet,
    ZeroShotSet,
)
from mcip.eval.benchmarks.manifest_data import manifests_read_once
from mcip.eval.text_encoding import cached_text_embeddings_by_tower, text_tower_fingerprint
from mcip.models import load_model
from mcip.models.base import EmbeddingModel
from mcip.models.fingerprint import fingerprints_held, saved_fingerprints


@dataclass
class BenchmarkResult:
    """Metrics (percent) of one model on one benchmark."""

    benchmark: str
    family: str
    metrics: dict[str, float]
    table1_metric: str
    seconds: float
    images: int
    unreadable: int

    @property
    def table1_value(self) -> float | None:
        return self.metrics.get(self.table1_metric)


@dataclass
class ModelReport:
    model: str
    results: dict[str, BenchmarkResult] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # benchmarks whose data was absent or that do not apply
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # why a benchmark was not run


def check_benchmarks(benchmarks: Sequence[Benchmark], root: Path, skip_missing: bool) -> list[str]:
    """Names of benchmarks whose data is absent; raises with every download hint unless ``skip_missing``."""
    missing: dict[str, str] = {}
    for b in benchmarks:
        try:
            b.check(root)
        except DatasetMissingError as exc:
            missing[b.name] = str(exc)
    if missing and not skip_missing:
        details = "\n".join(f"- {name}: {msg}" for name, msg in missing.items())
        raise DatasetMissingError(
            f"{len(missing)} benchmark(s) have no data under {root}:\n{details}\n"
            "Download them as described, or pass --skip-missing to report them as absent."
        )
    return list(missing)


class _Encoder:
    """Image/text embeddings of one model through the on-disk cache; counts unreadable images. Texts are
    cached per text tower (``text_fingerprint``, computed once per model), tokenizer and texts, so a row
    whose text tower is bitwise another's reuses its prompt and caption embeddings
    (:mod:`mcip.eval.text_encoding`); images that a model has to run its whole encoder on are decoded
    once for all the models (:mod:`mcip.image_pixels`)."""

    def __init__(
        self,
        model: EmbeddingModel,
        cache_dir: Path,
        batch_size: int,
        text_fingerprint: str | None = None,
        text_width: int | None = None,
    ) -> None:
        self.model, self.cache_dir, self.batch_size = model, cache_dir, batch_size
        self.text_fingerprint, self.text_width = text_fingerprint, text_width
        self.images = self.unreadable = 0

    def image(self, images: Images, desc: str) -> torch.Tensor:
        emb = cached_image_embeddings(
            self.model, images.paths, self.cache_dir, self.batch_size, desc, share_pixels=True
        )
        out = torch.from_numpy(np.asarray(emb, dtype=np.float32))
        bad = torch.isnan(out[:, 0]) if len(out) else torch.zeros(0, dtype=torch.bool)
        self.images += len(out) + images.skipped
        self.unreadable += int(bad.sum()) + images.skipped
        out[bad] = 0.0
        return out

    def text(self, texts: Sequence[str], desc: str) -> torch.Tensor:
        if self.text_fingerprint is None:
            self.text_fingerprint = text_tower_fingerprint(self.model)
        emb = cached_text_embeddings_by_tower(
            self.model,
            texts,
            self.cache_dir,
            desc=desc,
            fingerprint=self.text_fingerprint,
            width=self.text_width,
        )
        return torch.from_numpy(np.asarray(emb, dtype=np.float32))


def _labels(images: Images) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images.labels, dtype=np.int64))


def _run(enc: _Encoder, name: str, data: BenchmarkData) -> dict[str, float]:
    from mcip.eval import protocols as P

    if isinstance(data, RetrievalSet):
        return P.evaluate_retrieval(enc.image(data.images, f"{name} images"), _labels(data.images), data)
    if isinstance(data, RevisitedSet):
        db = enc.image(data.database, f"{name} database")
        return P.evaluate_revisited(enc.image(data.queries, f"{name} queries"), db, list(data.gnd))
    if isinstance(data, KNNSet):
        index = enc.image(data.index, f"{name} index")
        queries = enc.image(data.queries, f"{name} queries")
        return P.evaluate_knn(index, _labels(data.index), queries, _labels(data.queries), data.num_classes)
    if isinstance(data, ZeroShotSet):
        prompts = P.zeroshot_prompts(data.classnames, data.templates)
        classifier = P.classifier_from_prompts(
            enc.text(prompts, f"{name} class prompts"), len(data.classnames)
        )
        images = enc.image(data.images, f"{name} images")
        return P.evaluate_zeroshot(images, _labels(data.images), classifier, data.label_sets)
    if isinstance(data, CaptionSet):
        images = enc.image(data.images, f"{name} images")
        text = enc.text(list(data.captions), f"{name} captions")
        owners = torch.as_tensor(np.asarray(data.caption_image, dtype=np.int64))
        labels = _labels(data.images) if data.match_labels else None
        return P.evaluate_t2i(images, text, owners, image_labels=labels)
    raise TypeError(f"No protocol for {type(data).__name__}")


@torch.no_grad()
def _text_benchmarks_without_text_side(model: EmbeddingModel, loaded: dict) -> tuple[list[str], int | None]:
    """Keys of text benchmarks (zero-shot, T2I) that cannot run because text and image widths differ, and
    the text embedding width (None without text benchmarks)."""
    text = [k for k in loaded if isinstance(loaded[k], (ZeroShotSet, CaptionSet))]
    if not text:
        return [], None
    width = int(model.encode_text(["a"]).shape[-1])
    return ([] if width == model.embed_dim else text), width


def benchmark_keys(benchmarks: Sequence[Benchmark]) -> list[str]:
    """Report keys: the benchmark name, or its full spec (name + options) when two share a name."""
    names = [b.name for b in benchmarks]
    return [b.name if names.count(b.name) == 1 else b.spec for b in benchmarks]


def evaluate_models(
    models: Sequence[str],
    benchmarks: Sequence[Benchmark],
    data_root: str | Path,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 64,
    skip_missing: bool = False,
) -> list[ModelReport]:
    """Evaluate each model on each benchmark; see the module docstring."""
    root = Path(data_root)
    missing = set(check_benchmarks(benchmarks, root, skip_missing))
    keyed = dict(zip(benchmark_keys(benchmarks), benchmarks, strict=True))
    with manifests_read_once():  # benchmarks over one manifest share its records
        loaded = {key: b.load(root) for key, b in keyed.items() if b.name not in missing}
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    reports = []
    for spec in models:
        start = time.perf_counter()
        model = load_model(spec, device=device, precision=precision, random_init=False)
        report = ModelReport(str(spec), missing=[k for k, b in keyed.items() if b.name in missing])
        text_keys, text_width = _text_benchmarks_without_text_side(model, loaded)
        if text_keys:
            report.missing += text_keys
            report.notes.append(
                f"{', '.join(text_keys)}: not applicable, the model's text embedding width differs from its "
                f"image embedding width ({model.embed_dim}; e.g. drop_projector without re-alignment)."
            )
        text_fingerprint = None  # computed by the first benchmark that encodes text, then shared
        with torch.no_grad(), fingerprints_held(model, saved_fingerprints(model)):
            for key, data in loaded.items():
                if key in text_keys:
                    continue
                b, t0 = keyed[key], time.perf_counter()
                enc = _Encoder(model, cache, batch_size, text_fingerprint, text_width)
                metrics = _run(enc, key, data)
                text_fingerprint = enc.text_fingerprint
                seconds = time.perf_counter() - t0
                report.results[key] = BenchmarkResult(
                    key, b.family, metrics, b.table1_metric, seconds, enc.images, enc.unreadable
                )
        report.seconds = time.perf_counter() - start
        reports.append(report)
        del model
    return reports
