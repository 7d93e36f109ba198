"""The embedded default model: a tiny random Qwen2.5-VL with a byte-level BPE tokenizer trained
on SynFACS texts, built here so that every stage runs on a CPU with no download.

    facial-r1 model init-tiny --out runs/tiny-model [--size tiny|small]

The model uses the real Qwen2.5-VL classes and processor, so the code that trains and serves it
is the code that serves Qwen2.5-VL-3B/7B.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from facial_r1.checkpoints import ImageOnlyQwen2_5_VLProcessor, save_processor
from facial_r1.errors import FacialR1Error

log = logging.getLogger(__name__)

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]


@dataclass(frozen=True)
class TinySize:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mrope: tuple[int, int, int]  # must add up to head_dim / 2
    vision_depth: int
    vision_hidden: int
    vision_heads: int
    vocab: int
    image_px: int  # tiny models see faces at this size: (px/28)^2 visual tokens


TINY_SIZES = {
    "tiny": TinySize(128, 2, 4, 2, (4, 6, 6), 2, 64, 4, 1000, 112),
    "small": TinySize(256, 4, 8, 4, (4, 6, 6), 4, 128, 4, 1500, 112),
}


def build_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Byte-level BPE trained on `corpus`, with Qwen's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return Qwen2TokenizerFast(
        tokenizer_object=tok,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=without_default_system(qwen2_5_vl_chat_template),
        model_max_length=4096,
    )


_DEFAULT_SYSTEM = ("{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
                   "You are a helpful assistant.<|im_end|>\n{% endif %}")


def without_default_system(template: str) -> str:
    """Qwen's chat template minus the default system turn: the tiny model gains nothing from
    those tokens and every step pays for them. A system message given explicitly still renders."""
    if _DEFAULT_SYSTEM not in template:
        raise FacialR1Error("TRL's Qwen2.5-VL chat template changed: default system turn not found")
    return template.replace(_DEFAULT_SYSTEM, "")


def build_tiny(out: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build and save a randomly initialised Qwen2.5-VL with a locally trained tokenizer."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from facial_r1.data.synfacs import text_corpus

    if size not in TINY_SIZES:
        raise FacialR1Error(f"unknown tiny size {size!r}; choose from {sorted(TINY_SIZES)}")
    s = TINY_SIZES[size]
    out = Path(out)
    tokenizer = build_tokenizer(text_corpus(), s.vocab)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = s.hidden // s.heads
    if sum(s.mrope) * 2 != head_dim:
        raise FacialR1Error(f"mrope_section {s.mrope} must add up to head_dim/2 = {head_dim // 2}")
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=s.hidden, intermediate_size=4 * s.hidden,
            num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
            max_position_embeddings=4096, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                           "mrope_section": list(s.mrope)},
            bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=s.vision_depth, hidden_size=s.vision_hidden, intermediate_size=2 * s.vision_hidden,
            num_heads=s.vision_heads, out_hidden_size=s.hidden, window_size=112,
            fullatt_block_indexes=[s.vision_depth - 1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    config.facial_r1_tiny = size  # travels with every checkpoint trained from it (is_tiny)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    pixels = s.image_px * s.image_px
    image_processor = Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels)
    model.save_pretrained(out)
    # Saved as its parts: AutoProcessor (with torchvision) or load_processor (without) rebuilds it.
    save_processor(ImageOnlyQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=tokenizer.chat_template), out)
    n = sum(p.numel() for p in model.parameters())
    log.info("tiny Qwen2.5-VL (%s): %.2f M parameters, vocab %d -> %s", size, n / 1e6, len(tokenizer), out)
    return out



def is_tiny(model: str) -> bool:
    """Whether a checkpoint is the embedded tiny model or trained from it (its config says so)."""
    import json

    from facial_r1.checkpoints import adapter_start, is_adapter_folder

    if is_adapter_folder(model):
        return is_tiny(adapter_start(model))
    config = Path(model) / "config.json"
    return config.is_file() and "facial_r1_tiny" in json.loads(config.read_text())
