"""Pseudo-captions from a vision-language model (SPEC section 4, source 2): several captions per image.

Any transformers image-text-to-text model loads from a hub id or a local ``save_pretrained`` directory
(model + processor): BLIP, Florence-2, SmolVLM / Idefics3, LLaVA, Qwen2-VL ... Models whose code ships
with the checkpoint (the original Florence-2 repos) need ``trust_remote_code=True``.

Diversity comes from sampling, from several prompts, or both:

* ``n > 1``: ``n`` sampled captions per prompt (``do_sample=True``, ``temperature``, ``top_p``);
* ``n == 1``: one greedy caption per prompt.

Without ``prompts`` a model with a chat template is asked :data:`DEFAULT_CHAT_PROMPT`, Florence-2 gets its
``<CAPTION>`` task token and a plain captioner (BLIP) captions unconditionally. With a chat template
(SmolVLM, LLaVA, Qwen2-VL) a prompt becomes one user turn ``[image, text]``; otherwise it is a text prefix
(BLIP's "a picture of"). Only the generated text is kept: prompt, chat turns and special tokens are
removed, whitespace is normalised, and empty or repeated captions of an image are dropped, so an image
gets at most ``n * len(prompts)`` captions.

The output is the caption sidecar (:func:`mcip.data.captions.write_caption_sidecar`), appended after
every batch; ids already in it are skipped, so an interrupted run loses at most one batch and resumes
where it stopped. Batch ``k`` of ``records`` (in order, ``batch_size`` images) is generated after
``torch.manual_seed(seed + k)``: a resumed run writes the same captions as an uninterrupted one (same
records, batch size and seed). An image that cannot be decoded or captioned is logged, counted and
skipped (and tried again by the next run); an image that yields no caption is written with none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mcip.data.captions import read_caption_sidecar, write_caption_sidecar
from mcip.data.dataset import decode_image
from mcip.data.records import ImageRecord
from mcip.errors import ConfigError, ModelLoadError, require

__all__ = ["DEFAULT_CHAT_PROMPT", "GenerateSummary", "VLMCaptioner", "generate_captions", "load_captioner"]

log = logging.getLogger(__name__)

DEFAULT_CHAT_PROMPT = "Describe this image in one sentence."
# Default prompt by config.model_type for models that need one but have no chat template.
DEFAULT_TASK_PROMPTS = {"florence2": "<CAPTION>"}
# Tried in order; the first whose mapping (or, with trust_remote_code, the checkpoint's auto_map) knows
# the config is used. AutoModelForVision2Seq exists in transformers 4.x only.
_NATIVE_AUTO_CLASSES = ("AutoModelForImageTextToText", "AutoModelForVision2Seq")
_REMOTE_AUTO_CLASSES = (*_NATIVE_AUTO_CLASSES, "AutoModelForCausalLM")
MAX_FAILURES_KEPT = 20
_HUB_HINT = (
    "Pass a local directory holding the model and its processor (model.save_pretrained(DIR) and "
    "processor.save_pretrained(DIR)), or give this machine access to the Hugging Face Hub (or a "
    "pre-filled HF_HOME cache)."
)


@dataclass
class GenerateSummary:
    """What one :func:`generate_captions` call did.

    Attributes:
        images_total: distinct image ids among the records.
        images_done_before: ids already in the output when the run started (skipped).
        images_captioned: images written by this run with at least one caption.
        images_without_captions: images written by this run whose generations were all empty.
        images_failed: images that could not be decoded or captioned (not written; retried next run).
        captions_written: captions appended by this run.
        seconds: wall-clock time of the run.
        failures: the first 20 ``(id, error)`` pairs.
    """

    images_total: int = 0
    images_done_before: int = 0
    images_captioned: int = 0
    images_without_captions: int = 0
    images_failed: int = 0
    captions_written: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


def _is_path_like(vlm: str) -> bool:
    """A filesystem path rather than a hub id ("name" or "org/name")."""
    return Path(vlm).is_absolute() or vlm.startswith((".", "~")) or vlm.count("/") > 1


def _model_class(transformers: Any, config: Any, trust_remote_code: bool, vlm: str) -> Any:
    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code:
        for name in _REMOTE_AUTO_CLASSES:
            if name in auto_map and hasattr(transformers, name):
                return getattr(transformers, name)
    for name in _NATIVE_AUTO_CLASSES:
        cls = getattr(transformers, name, None)
        if cls is not None and type(config) in cls._model_mapping:
            return cls
    hint = (
        " It ships its own model code: pass trust_remote_code=True (--trust-remote-code) if you trust it."
        if auto_map and not trust_remote_code
        else " Use an image-text-to-text model (BLIP, Florence-2, SmolVLM, LLaVA, Qwen2-VL ...)."
    )
    raise ModelLoadError(
        f"'{vlm}' (model_type '{getattr(config, 'model_type', '?')}') is not an image-text-to-text "
        f"model that transformers can load.{hint}"
    )


def _torch_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"Unknown device '{device}'; use 'cpu', 'cuda' or 'cuda:N'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device '{device}' requested but CUDA is not available; use device='cpu'.")
    return dev


def load_captioner(vlm: str, device: str = "cpu", trust_remote_code: bool = False) -> VLMCaptioner:
    """Model and processor of ``vlm`` (hub id or local directory) on ``device``, ready to caption."""
    transformers = require("transformers", "caption", "Captioning with a vision-language model")
    dev = _torch_device(device)
    if _is_path_like(vlm) and not Path(vlm).expanduser().is_dir():
        raise ModelLoadError(f"Vision-language model directory not found: {vlm}. {_HUB_HINT}")
    source = str(Path(vlm).expanduser()) if _is_path_like(vlm) else vlm
    try:
        config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        cls = _model_class(transformers, config, trust_remote_code, vlm)
        processor = transformers.AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = cls.from_pretrained(source, trust_remote_code=trust_remote_code)
    except ModelLoadError:
        raise
    except Exception as exc:  # OSError (not found / offline), ValueError, ImportError from remote code ...
        raise ModelLoadError(f"Could not load the vision-language model '{vlm}': {exc}. {_HUB_HINT}") from exc
    if getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(
            f"'{vlm}' has no image processor ({type(processor).__name__} loaded); save the model's full "
            "processor next to it with processor.save_pretrained(DIR)."
        )
    return VLMCaptioner(model.to(dev).eval(), processor)


def _normalise(text: str) -> str:
    return " ".join(text.split())


class VLMCaptioner:
    """Captions PIL images with one model + processor; see the module docstring for prompting."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", None)
        self.chat_template = getattr(processor, "chat_template", None) or getattr(
            self.tokenizer, "chat_template", None
        )
        decoder_only = not getattr(model.config, "is_encoder_decoder", False)
        if self.chat_template and decoder_only and self.tokenizer is not None:
            self.tokenizer.padding_side = "left"  # batched decoder-only generation continues on the right

    def default_prompts(self) -> list[str | None]:
        """The prompt used when the caller gives none."""
        if self.chat_template:
            return [DEFAULT_CHAT_PROMPT]
        return [DEFAULT_TASK_PROMPTS.get(getattr(self.model.config, "model_type", ""))]

    def _inputs(self, images: Sequence[Any], prompt: str | None) -> Any:
        if self.chat_template:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = self.processor.apply_chat_template(
                messages, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
            )
            kwargs = {"images": [[im] for im in images], "text": [text] * len(images), "padding": True}
        else:
            kwargs = {"images": list(images)}
            if prompt:
                kwargs["text"] = [prompt] * len(images)
        inputs = self.processor(**kwargs, return_tensors="pt")
        return inputs.to(self.model.device, dtype=self.model.dtype)

    def _strip_prompt(self, text: str, prompt: str | None) -> str:
        """Drop a text prefix the model echoes (BLIP returns its prefix, possibly lower-cased)."""
        if not prompt or self.chat_template:
            return text
        forms = [_normalise(prompt)]
        if self.tokenizer is not None:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            forms.append(_normalise(self.tokenizer.decode(ids, skip_special_tokens=True)))
        for form in forms:
            if form and text.lower().startswith(form.lower()):
                return text[len(form) :].strip()
        return text

    def caption(self, images: Sequence[Any], prompt: str | None, generation: dict) -> list[list[str]]:
        """Per image, the cleaned texts of ``generation["num_return_sequences"]`` (default 1) outputs."""
        inputs = self._inputs(images, prompt)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **generation)
        per = generation.get("num_return_sequences", 1)
        input_ids = inputs.get("input_ids")
        if input_ids is not None and out.shape[1] >= input_ids.shape[1]:
            prefix = input_ids.repeat_interleave(per, dim=0).to(out.device)
            if torch.equal(out[:, : prefix.shape[1]], prefix):  # decoder-only: keep the new tokens only
                out = out[:, prefix.shape[1] :]
        decode = self.tokenizer.batch_decode if self.tokenizer is not None else self.processor.batch_decode
        texts = [self._strip_prompt(_normalise(t), prompt) for t in decode(out, skip_special_tokens=True)]
        return [texts[i * per : (i + 1) * per] for i in range(len(images))]


def _generation_kwargs(n: int, max_new_tokens: int, temperature: float, top_p: float) -> dict:
    if n == 1:
        return {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1}
    return {
        "max_new_tokens": max_new_tokens,
        "do_sample": True,
        "temperature": temperature,
        "top_p": top_p,
        "num_beams": 1,
        "num_return_sequences": n,
    }


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")


def _validate(n, batch_size, max_new_tokens, temperature, top_p, prompts, out: Path) -> None:
    for name, value in (("n", n), ("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
        _check_int(name, value)
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r} (use n=1 for greedy captions).")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}.")
    if prompts is not None and (
        isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts)
    ):
        raise ConfigError(
            f"prompts must be a non-empty list of non-empty strings (or None), got {prompts!r}."
        )
    if out.is_dir():
        raise ConfigError(f"out must be a JSONL file path, but {out} is a directory.")


def _unique_records(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    seen: dict[str, ImageRecord] = {}
    for record in records:  # a shard sample (SHARD.tar#KEY) decodes like a file
        seen.setdefault(record.id, record)
    return list(seen.values())


def _to_rgb(image: Any) -> Any:
    return image.convert("RGB")


def _caption_images(
    captioner: VLMCaptioner, images: list, prompts: list, generation: dict
) -> list[list[str]]:
    """Per image, its deduplicated non-empty captions over every prompt."""
    by_image: list[dict[str, None]] = [{} for _ in images]
    for prompt in prompts:
        for texts, seen in zip(captioner.caption(images, prompt, generation), by_image, strict=True):
            seen.update(dict.fromkeys(t for t in texts if t))
    return [list(seen) for seen in by_image]


class _BatchRunner:
    """Captions one batch of records; isolates an image that breaks the batch."""

    def __init__(self, captioner: VLMCaptioner, prompts: list, generation: dict) -> None:
        self.captioner, self.prompts, self.generation = captioner, prompts, generation
        self.succeeded = 0

    def __call__(self, batch: Sequence[ImageRecord]) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
        good, failures = [], []
        for record in batch:
            image = decode_image(record.path, _to_rgb, str(record.path))
            if isinstance(image, str):
                failures.append((record.id, image))
            else:
                good.append((record, image))
        if not good:
            return {}, failures
        try:
            caps = _caption_images(self.captioner, [im for _, im in good], self.prompts, self.generation)
            results = {record.id: c for (record, _), c in zip(good, caps, strict=True)}
        except Exception as exc:  # one image may break the batch: caption them one by one
            results, single_failures = self._one_by_one(good, exc)
            failures += single_failures
        self.succeeded += len(results)
        return results, failures

    def _one_by_one(self, good: list, batch_exc: Exception) -> tuple[dict, list]:
        results, failures = {}, []
        for record, image in good:
            try:
                caps = _caption_images(self.captioner, [image], self.prompts, self.generation)
                results[record.id] = caps[0]
            except Exception as exc:
                failures.append((record.id, f"{record.path}: {type(exc).__name__}: {exc}"))
        if not results and not self.succeeded:  # nothing ever worked: a setup problem, not a bad image
            raise batch_exc
        return results, failures


def generate_captions(
    records: Sequence[ImageRecord],
    vlm: str,
    out: str | Path,
    n: int = 5,
    prompts: Sequence[str] | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    max_new_tokens: int = 40,
    temperature: float = 0.9,
    top_p: float = 0.95,
    seed: int = 0,
    progress: bool = True,
    trust_remote_code: bool = False,
) -> GenerateSummary:
    """Append up to ``n * len(prompts)`` VLM captions per image to the sidecar ``out``; resumable.

    Captions are stored as ``{"text": ..., "source": f"vlm:{vlm}", "score": None}``. The model is loaded
    only when some image still needs captions. See the module docstring for prompts, sampling, resume
    and determinism.
    """
    from tqdm.auto import tqdm

    start, out = time.perf_counter(), Path(out)
    _validate(n, batch_size, max_new_tokens, temperature, top_p, prompts, out)
    records = _unique_records(records)
    done = set(read_caption_sidecar(out)) if out.is_file() else set()
    summary = GenerateSummary(len(records), sum(r.id in done for r in records))
    batches = [
        (k, [r for r in records[i : i + batch_size] if r.id not in done])
        for k, i in enumerate(range(0, len(records), batch_size))
    ]
    batches = [(k, batch) for k, batch in batches if batch]
    if batches:
        captioner = load_captioner(vlm, device, trust_remote_code)
        generation = _generation_kwargs(n, max_new_tokens, temperature, top_p)
        runner = _BatchRunner(captioner, list(prompts or captioner.default_prompts()), generation)
        bar = tqdm(total=summary.images_total, initial=summary.images_done_before, disable=not progress)
        with bar:
            for k, batch in batches:
                torch.manual_seed(seed + k)
                _record(summary, out, f"vlm:{vlm}", *runner(batch))
                bar.update(len(batch))
    summary.seconds = time.perf_counter() - start
    return summary


def _record(summary: GenerateSummary, out: Path, source: str, results: dict, failures: list) -> None:
    """Append one batch to the sidecar and count it."""
    if results:
        entries = {
            i: [{"text": t, "source": source, "score": None} for t in caps] for i, caps in results.items()
        }
        write_caption_sidecar(out, entries)
    for image_id, error in failures:
        log.warning("Skipped image %s: %s", image_id, error)
    summary.images_failed += len(failures)
    summary.failures.extend(failures[: MAX_FAILURES_KEPT - len(summary.failures)])
    summary.images_captioned += sum(1 for caps in results.values() if caps)
    summary.images_without_captions += sum(1 for caps in results.values() if not caps)
    summary.captions_written += sum(len(caps) for caps in results.values())
