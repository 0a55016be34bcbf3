"""VLM pseudo-captions with tiny random-weight models built here, saved with save_pretrained and loaded back.

Families: BLIP (plain captioner, text prefix), LLaVA and Qwen2-VL (chat templates, decoder-only, left
padding), Florence-2 (encoder-decoder, task-token prompt). The captions are nonsense; the tests check
mechanics: counts, sources, the sidecar format, prompt handling against each model's own generate(),
determinism, resume after an interrupt, bad images and load errors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mcip.captions.generate as gen
from mcip.captions.generate import DEFAULT_CHAT_PROMPT, generate_captions
from mcip.data.captions import read_caption_sidecar
from mcip.data.records import ImageRecord
from mcip.errors import ConfigError, ModelLoadError

pytest.importorskip("transformers")

WORDS = ["a", "photo", "of", "the", "dog", "cat", "red", "blue", "on", "in", "with", "tree", "house", "small"]
CHAT_WORDS = ["User", "Assistant", ":", "Describe", "this", "image", "in", "one", "sentence", "."]
TINY = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
TINY_LLAMA = {**TINY, "model_type": "llama", "num_key_value_heads": 1, "max_position_embeddings": 128}
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}:{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %} <image>{% else %} {{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> str:
    """A 1-layer BLIP captioner with a 20-token BERT vocabulary, saved with its processor."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    out = tmp_path_factory.mktemp("blip")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(out / "vocab.txt"), bos_token="[DEC]", model_max_length=32)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 16, "width": 16}), tokenizer=tok
    )
    ids = {"bos_token_id": 5, "sep_token_id": 3, "pad_token_id": 0, "eos_token_id": 3}
    config = BlipConfig(
        vision_config={**TINY, "image_size": 16, "patch_size": 8},
        text_config={**TINY, **ids, "vocab_size": len(vocab), "max_position_embeddings": 64},
        projection_dim=16,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


def _word_tokenizer(words: list[str], specials: list[str], **special_tokens):
    """A fast word-level tokenizer (no pretrained files): ``specials`` first, then ``words``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(dict.fromkeys([*specials, *words]))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", **special_tokens
    )
    return tok, vocab


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> str:
    """A 1-layer LLaVA (CLIP vision + Llama text) whose processor has a chat template."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    out = tmp_path_factory.mktemp("llava")
    tok, vocab = _word_tokenizer(
        [*WORDS, *CHAT_WORDS],
        ["<pad>", "<unk>", "<s>", "</s>", "<image>"],
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,  # CLIP's CLS token
    )
    config = LlavaConfig(
        vision_config={**TINY, "model_type": "clip_vision_model", "image_size": 16, "patch_size": 8},
        text_config={
            **TINY_LLAMA,
            "vocab_size": len(vocab),
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
        },
        image_token_id=vocab["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def qwen2_vl_dir(tmp_path_factory) -> str:
    """A 1-layer Qwen2-VL: dynamic resolution, so images of other shapes get other numbers of tokens."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    out = tmp_path_factory.mktemp("qwen2vl")
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    specials += ["<|image_pad|>", "<|video_pad|>"]
    tok, vocab = _word_tokenizer(
        [*WORDS, *CHAT_WORDS], specials, eos_token="<|im_end|>", additional_special_tokens=specials[2:]
    )
    template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }} {% for c in message['content'] %}"
        "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %} {{ c['text'] }}"
        "{% endif %}{% endfor %}<|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>Assistant {% endif %}"
    )
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=template,
    )
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    config = Qwen2VLConfig(
        vision_config={"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "patch_size": 14},
        text_config={
            **TINY_LLAMA,
            "model_type": "qwen2_vl_text",
            "hidden_size": 32,
            "vocab_size": len(vocab),
            "rope_parameters": rope,
            "pad_token_id": 0,
            "eos_token_id": vocab["<|im_end|>"],
            "bos_token_id": None,
        },
        **{f"{name}_token_id": vocab[f"<|{name}|>"] for name in ("vision_start", "vision_end")},
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
    )
    torch.manual_seed(3)  # a seed whose greedy outputs differ between images
    Qwen2VLForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def florence2_dir(tmp_path_factory) -> str:
    """A tiny Florence-2 (DaViT + BART encoder-decoder, no chat template, task-token prompts)."""
    from transformers import (
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    out = tmp_path_factory.mktemp("florence2")
    tok, vocab = _word_tokenizer(
        [*WORDS, "What", "does", "image", "describe", "?"],
        ["<pad>", "<unk>", "<s>", "</s>", "<image>"],
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    # 64 px / total stride 32 = 2 x 2 image tokens + 1 pooled token.
    image_processor = CLIPImageProcessor(
        size={"height": 64, "width": 64}, do_center_crop=False, image_seq_length=5
    )
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tok)
    one = [1, 1, 1, 1]
    bart = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2}
    bart |= {
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "max_position_embeddings": 64,
    }
    config = Florence2Config(
        vision_config={
            **{"depths": one, "embed_dim": [8] * 4, "num_heads": one, "num_groups": one},
            **{"window_size": 2, "projection_dim": 16},
        },
        text_config={
            **bart,
            "model_type": "bart",
            "vocab_size": len(vocab),
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "decoder_start_token_id": 3,
            "forced_bos_token_id": None,
            "forced_eos_token_id": 3,
        },
        image_token_id=vocab["<image>"],
    )
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(config)
    model.generation_config.min_new_tokens = 3  # the random weights favour an immediate </s>
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


def _png(path: Path, seed: int, size: tuple[int, int] = (20, 24)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def records(tmp_path) -> list[ImageRecord]:
    """Six good images (two classes)."""
    (tmp_path / "img").mkdir()
    return [ImageRecord(f"img/{i}.png", _png(tmp_path / f"img/{i}.png", i), "ab"[i % 2]) for i in range(6)]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _raw_greedy(model_dir: str, images: list, text: list[str] | None) -> list[str]:
    """The model's own greedy generations, decoded: the reference for prompt handling."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    kwargs = {"images": images} if text is None else {"images": images, "text": text, "padding": True}
    inputs = processor(**kwargs, return_tensors="pt")
    out = model.generate(**inputs, do_sample=False, max_new_tokens=8)
    return processor.batch_decode(out, skip_special_tokens=True)


def test_sampled_captions_are_counted_sourced_and_read_back(blip_dir, records, tmp_path):
    out = tmp_path / "caps.jsonl"
    s = generate_captions(records, blip_dir, out, n=3, batch_size=4, max_new_tokens=8)  # with a progress bar
    lines = _lines(out)
    assert sorted(line["id"] for line in lines) == sorted(r.id for r in records)  # every id exactly once
    back = read_caption_sidecar(out)
    assert all(len(caps) <= 3 for caps in back.values())
    assert all(
        len(set(caps)) == len(caps) and all(c and c == " ".join(c.split()) for c in caps)
        for caps in back.values()
    )
    assert sum(map(len, back.values())) == s.captions_written > 0
    assert {c["source"] for line in lines for c in line["captions"]} == {f"vlm:{blip_dir}"}
    assert {c["score"] for line in lines for c in line["captions"]} == {None}
    assert (s.images_total, s.images_done_before, s.images_failed, s.failures) == (6, 0, 0, [])
    assert s.images_captioned + s.images_without_captions == 6
    assert s.images_captioned == sum(1 for caps in back.values() if caps)


def test_same_seed_same_file_and_another_seed_differs(blip_dir, records, tmp_path):
    kw = {"n": 2, "batch_size": 3, "max_new_tokens": 8, "progress": False}
    generate_captions(records, blip_dir, tmp_path / "a.jsonl", seed=1, **kw)
    generate_captions(records, blip_dir, tmp_path / "b.jsonl", seed=1, **kw)
    generate_captions(records, blip_dir, tmp_path / "c.jsonl", seed=2, **kw)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert (tmp_path / "a.jsonl").read_text() != (tmp_path / "c.jsonl").read_text()


class _Interrupted(Exception):
    pass


def test_resume_after_interrupt_equals_uninterrupted_run(blip_dir, records, tmp_path, monkeypatch):
    kw = {"n": 3, "batch_size": 2, "max_new_tokens": 8, "seed": 5, "progress": False}
    full = tmp_path / "full.jsonl"
    generate_captions(records, blip_dir, full, **kw)

    part = tmp_path / "part.jsonl"
    real_write, calls = gen.write_caption_sidecar, []

    def write_once_then_die(path, captions_by_id, *args, **kwargs):
        if calls:
            raise _Interrupted
        calls.append(list(captions_by_id))
        return real_write(path, captions_by_id, *args, **kwargs)

    monkeypatch.setattr(gen, "write_caption_sidecar", write_once_then_die)
    with pytest.raises(_Interrupted):
        generate_captions(records, blip_dir, part, **kw)
    assert calls == [[records[0].id, records[1].id]] and len(_lines(part)) == 2

    monkeypatch.setattr(gen, "write_caption_sidecar", real_write)
    s = generate_captions(records, blip_dir, part, **kw)
    assert (s.images_done_before, s.images_captioned + s.images_without_captions) == (2, 4)
    assert [line["id"] for line in _lines(part)] == [r.id for r in records]  # each id once, in order
    assert part.read_text() == full.read_text()

    # Nothing left to do: the model is not even loaded.
    again = generate_captions(records, str(tmp_path / "gone" / "model"), part, **kw)
    assert (again.images_done_before, again.captions_written) == (6, 0)
    assert part.read_text() == full.read_text()


def test_corrupt_and_missing_images_are_skipped_reported_and_retried(blip_dir, records, tmp_path, caplog):
    corrupt = tmp_path / "img" / "corrupt.png"
    corrupt.write_bytes(os.urandom(200))
    bad = [ImageRecord("corrupt", corrupt, "a"), ImageRecord("missing", tmp_path / "nope.png", "b")]
    mixed = [records[0], bad[0], *records[1:3], bad[1]]
    out = tmp_path / "caps.jsonl"
    s = generate_captions(mixed, blip_dir, out, n=2, batch_size=2, max_new_tokens=8, progress=False)
    assert s.images_failed == 2 and [i for i, _ in s.failures] == ["corrupt", "missing"]
    assert "corrupt.png" in s.failures[0][1] and "nope.png" in s.failures[1][1]
    assert "Skipped image corrupt" in caplog.text
    assert sorted(read_caption_sidecar(out)) == sorted(r.id for r in records[:3])

    s2 = generate_captions(mixed, blip_dir, out, n=2, batch_size=2, max_new_tokens=8, progress=False)
    assert (s2.images_done_before, s2.images_failed, s2.captions_written) == (3, 2, 0)


def test_an_image_that_breaks_generation_is_isolated(blip_dir, records, tmp_path, monkeypatch):
    odd = ImageRecord("odd", _png(tmp_path / "odd.png", 9, size=(7, 7)), "a")
    real_caption = gen.VLMCaptioner.caption

    def caption(self, images, prompt, generation):
        if any(im.size == (7, 7) for im in images):
            raise RuntimeError("processor cannot handle 7x7")
        return real_caption(self, images, prompt, generation)

    monkeypatch.setattr(gen.VLMCaptioner, "caption", caption)
    out = tmp_path / "caps.jsonl"
    s = generate_captions([*records[:2], odd, records[2]], blip_dir, out, n=2, batch_size=2, progress=False)
    assert s.images_failed == 1 and s.failures[0][0] == "odd" and "7x7" in s.failures[0][1]
    assert sorted(read_caption_sidecar(out)) == sorted(r.id for r in records[:3])


def test_a_setup_problem_is_raised_not_counted(blip_dir, records, tmp_path, monkeypatch):
    def caption(self, images, prompt, generation):
        raise RuntimeError("bad prompt for this processor")

    monkeypatch.setattr(gen.VLMCaptioner, "caption", caption)
    with pytest.raises(RuntimeError, match="bad prompt"):
        generate_captions(records, blip_dir, tmp_path / "caps.jsonl", batch_size=2, progress=False)
    assert not (tmp_path / "caps.jsonl").exists()


def test_images_without_any_caption_are_written_empty(blip_dir, records, tmp_path, monkeypatch):
    monkeypatch.setattr(gen.VLMCaptioner, "caption", lambda self, images, p, g: [["", ""] for _ in images])
    out = tmp_path / "caps.jsonl"
    s = generate_captions(records[:3], blip_dir, out, n=2, progress=False)
    assert (s.images_captioned, s.images_without_captions, s.captions_written) == (0, 3, 0)
    assert read_caption_sidecar(out) == {r.id: [] for r in records[:3]}


def test_prefix_prompts_greedy_one_caption_per_prompt_without_the_prompt(blip_dir, records, tmp_path):
    prompts = ["a photo of", "the dog"]
    out = tmp_path / "caps.jsonl"
    generate_captions(records[:3], blip_dir, out, n=1, prompts=prompts, max_new_tokens=8, progress=False)
    got = read_caption_sidecar(out)
    images = [Image.open(r.path).convert("RGB") for r in records[:3]]
    expected: list[dict[str, None]] = [{} for _ in images]
    for prompt in prompts:
        for seen, raw in zip(expected, _raw_greedy(blip_dir, images, [prompt] * 3), strict=True):
            assert raw.startswith(prompt)  # BLIP echoes its prefix; generate_captions removes it
            if text := " ".join(raw[len(prompt) :].split()):
                seen[text] = None
    assert got == {r.id: list(seen) for r, seen in zip(records[:3], expected, strict=True)}


def test_unconditional_blip_matches_its_own_generate(blip_dir, records, tmp_path):
    assert gen.load_captioner(blip_dir).default_prompts() == [None]
    out = tmp_path / "caps.jsonl"
    generate_captions(records[:2], blip_dir, out, n=1, max_new_tokens=8, progress=False)
    images = [Image.open(r.path).convert("RGB") for r in records[:2]]
    raw = _raw_greedy(blip_dir, images, None)
    assert read_caption_sidecar(out) == {
        r.id: [t] if t else [] for r, t in zip(records[:2], raw, strict=True)
    }


def test_chat_template_model_keeps_only_the_new_tokens(llava_dir, records, tmp_path):
    out = tmp_path / "caps.jsonl"
    generate_captions(records[:3], llava_dir, out, n=1, batch_size=3, max_new_tokens=8, progress=False)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(llava_dir)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DEFAULT_CHAT_PROMPT}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("User: <image> Describe") and prompt.endswith("Assistant:")
    images = [Image.open(r.path).convert("RGB") for r in records[:3]]
    raw = _raw_greedy(llava_dir, [[im] for im in images], [prompt] * 3)
    prompt_decoded = processor.batch_decode(
        processor(images=[images[0]], text=[prompt])["input_ids"], skip_special_tokens=True
    )[0]
    expected = [" ".join(t[len(prompt_decoded) :].split()) for t in raw]
    assert all(t.startswith(prompt_decoded) for t in raw)
    assert read_caption_sidecar(out) == {
        r.id: [t] if t else [] for r, t in zip(records[:3], expected, strict=True)
    }


def test_chat_template_model_samples_n_per_prompt(llava_dir, records, tmp_path):
    out = tmp_path / "caps.jsonl"
    s = generate_captions(
        records,
        llava_dir,
        out,
        n=3,
        prompts=["Describe this image .", "one image"],
        batch_size=4,
        max_new_tokens=6,
        progress=False,
    )
    back = read_caption_sidecar(out)
    assert sorted(back) == sorted(r.id for r in records)
    assert all(len(caps) <= 6 for caps in back.values()) and s.captions_written > 0
    assert {c["source"] for line in _lines(out) for c in line["captions"]} == {f"vlm:{llava_dir}"}


def test_missing_model_directory_fails_with_the_fix(records, tmp_path):
    with pytest.raises(ModelLoadError, match="local directory"):
        generate_captions(records, str(tmp_path / "no" / "model"), tmp_path / "caps.jsonl", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="Hugging Face Hub"):
        generate_captions(records, str(empty), tmp_path / "caps.jsonl", progress=False)


def test_a_text_only_model_is_refused(records, tmp_path):
    from transformers import BertConfig

    BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="not an image-text-to-text model"):
        generate_captions(records, str(tmp_path / "bert"), tmp_path / "caps.jsonl", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"max_new_tokens": True}, "max_new_tokens must be"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"prompts": []}, "prompts"),
        ({"prompts": "a photo of"}, "prompts"),
        ({"prompts": ["ok", " "]}, "prompts"),
    ],
)
def test_invalid_settings_fail_before_loading(records, tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        generate_captions(
            records, str(tmp_path / "no-model"), tmp_path / "caps.jsonl", progress=False, **kwargs
        )


def test_out_directory_is_refused(records, tmp_path):  # shard records: tests/data/test_shards_captions.py
    with pytest.raises(ConfigError, match="directory"):
        generate_captions(records, "unused", tmp_path, progress=False)


def test_qwen2_vl_batches_of_mixed_shapes_equal_one_by_one(qwen2_vl_dir, tmp_path):
    """Images of other shapes get other numbers of image tokens: batches are left-padded correctly."""
    (tmp_path / "img").mkdir()
    shapes = [(60, 60), (60, 130), (130, 60), (90, 90), (40, 200)]
    recs = [ImageRecord(str(i), _png(tmp_path / f"img/{i}.png", i, hw), "a") for i, hw in enumerate(shapes)]
    kw = {"n": 1, "max_new_tokens": 6, "progress": False}
    generate_captions(recs, qwen2_vl_dir, tmp_path / "batched.jsonl", batch_size=5, **kw)
    generate_captions(recs, qwen2_vl_dir, tmp_path / "single.jsonl", batch_size=1, **kw)
    batched = read_caption_sidecar(tmp_path / "batched.jsonl")
    assert batched == read_caption_sidecar(tmp_path / "single.jsonl")
    assert len({tuple(caps) for caps in batched.values()}) > 1  # the comparison is not vacuous


def test_florence2_uses_its_caption_task_token_by_default(florence2_dir, records, tmp_path, monkeypatch):
    prompts_seen, real_caption = [], gen.VLMCaptioner.caption

    def spy(self, images, prompt, generation):
        prompts_seen.append(prompt)
        return real_caption(self, images, prompt, generation)

    monkeypatch.setattr(gen.VLMCaptioner, "caption", spy)
    out = tmp_path / "caps.jsonl"
    s = generate_captions(records[:3], florence2_dir, out, n=1, max_new_tokens=8, progress=False)
    images = [Image.open(r.path).convert("RGB") for r in records[:3]]
    raw = [" ".join(t.split()) for t in _raw_greedy(florence2_dir, images, ["<CAPTION>"] * 3)]
    assert read_caption_sidecar(out) == {
        r.id: [t] if t else [] for r, t in zip(records[:3], raw, strict=True)
    }
    assert s.captions_written > 0 and prompts_seen == ["<CAPTION>"]
    sampled = generate_captions(
        records[:3], florence2_dir, tmp_path / "s.jsonl", n=3, max_new_tokens=8, progress=False
    )
    assert 0 < sampled.captions_written <= 9


def test_cli_generate_then_summary(blip_dir, tmp_path, capsys):
    from mcip.cli import main

    folder = tmp_path / "imgs" / "thing"
    folder.mkdir(parents=True)
    for i in range(3):
        _png(folder / f"{i}.png", i)
    out = tmp_path / "vlm.jsonl"
    code = main(
        [
            "captions",
            "generate",
            "--images",
            str(tmp_path / "imgs"),
            "--vlm",
            blip_dir,
            "--n",
            "2",
            "--batch-size",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "3 images captioned" in printed and f"{out}: 3 images" in printed
