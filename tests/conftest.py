"""Shared fixtures: tiny random-weight models of every backend, built offline in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "an",
    "dog",
    "cat",
    "bird",
    "car",
    "red",
    "green",
    "blue",
    "small",
    "large",
    "emoji",
    "face",
    "smiling",
    "banana",
    "apple",
    "tree",
    "house",
    "on",
    "in",
    "with",
    "and",
    "picture",
    "drawing",
    "sketch",
    "two",
    "one",
]
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"]
TINY_OPENCLIP_ARCH = "mcip-test-tiny-vit"


def build_word_tokenizer(out_dir: Path, bos: str = "[BOS]", eos: str = "[EOS]"):
    """A tiny fast word-level tokenizer saved with save_pretrained (loads with AutoTokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token=bos,
        eos_token=eos,
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=16,
    )
    fast.save_pretrained(out_dir)
    return fast, vocab


@pytest.fixture(autouse=True)
def _worker_start_method_per_test():
    """A test that runs the command line in-process switches this process's DataLoader workers to the fork
    server (mcip.data.workers); the next test starts from the interpreter's default again."""
    yield
    from mcip.data.workers import use_forkserver

    use_forkserver(False)


@pytest.fixture(scope="session")
def tiny_openclip(tmp_path_factory) -> str:
    """Registers a 2-layer ViT / 2-layer text open_clip config and returns its architecture name."""
    import open_clip

    if open_clip.get_model_config(TINY_OPENCLIP_ARCH) is None:
        cfg = {
            "embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
        }
        path = tmp_path_factory.mktemp("openclip_cfg") / f"{TINY_OPENCLIP_ARCH}.json"
        path.write_text(json.dumps(cfg))
        open_clip.add_model_config(path)
    return TINY_OPENCLIP_ARCH


def _vision_cfg():
    return dict(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
    )


def _save_tiny_dual_encoder(out: Path, family: str) -> Path:
    """A 3-block text / 2-block vision transformers CLIP or SigLIP, with the word tokenizer, in ``out``."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    _, vocab = build_word_tokenizer(out)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=16,
        eos_token_id=vocab["[EOS]"],
        bos_token_id=vocab["[BOS]"],
        pad_token_id=vocab["[PAD]"],
    )
    torch.manual_seed(0)
    if family == "clip":
        net = CLIPModel(CLIPConfig(text_config=text, vision_config=_vision_cfg(), projection_dim=16))
    else:
        net = SiglipModel(SiglipConfig(text_config=text, vision_config=_vision_cfg()))
    net.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_hf_clip_dir(tmp_path_factory) -> Path:
    return _save_tiny_dual_encoder(tmp_path_factory.mktemp("hf_clip"), "clip")


@pytest.fixture(scope="session")
def tiny_hf_siglip_dir(tmp_path_factory) -> Path:
    return _save_tiny_dual_encoder(tmp_path_factory.mktemp("hf_siglip"), "siglip")


@pytest.fixture(scope="session")
def tiny_text_tower_dir(tmp_path_factory) -> Path:
    """A tiny BERT (the shape of all-MiniLM-L6-v2) with a sentence-transformers pooling config."""
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny_bert")
    _, vocab = build_word_tokenizer(out, bos="[CLS]", eos="[SEP]")
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=32,
        )
    ).save_pretrained(out)
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return out


@pytest.fixture(scope="session")
def model_specs(tiny_openclip, tiny_hf_clip_dir, tiny_hf_siglip_dir, tiny_text_tower_dir) -> dict[str, dict]:
    """name -> load_model arguments, one tiny model per backend family."""
    return {
        "openclip": {"spec": f"openclip:{tiny_openclip}"},
        "hf-clip": {"spec": f"hf:{tiny_hf_clip_dir}"},
        "hf-siglip": {"spec": f"hf:{tiny_hf_siglip_dir}"},
        "composed": {
            "spec": f"composed:test_efficientnet+{tiny_text_tower_dir}",
            "embed_dim": 16,
            "image_size": 32,
        },
    }


BACKEND_CASES = ["openclip", "hf-clip", "hf-siglip", "composed"]


@pytest.fixture(params=BACKEND_CASES)
def tiny_model(request, model_specs):
    import mcip

    torch.manual_seed(0)
    kwargs = dict(model_specs[request.param])
    return mcip.load_model(kwargs.pop("spec"), **kwargs)


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)
