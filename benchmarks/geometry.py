"""Randomly initialised Qwen2.5-VL models of the published 3B / 7B geometry, for speed and
memory benchmarks on GPUs (weights can't be downloaded here; a step's cost does not depend on
the values). Shared by sft_speed.py and grpo_speed.py."""

from pathlib import Path

import torch

from facial_r1.tiny import build_tiny

# Published Qwen2.5-VL sizes (text: hidden, layers, heads, kv heads, MLP; vision out = text hidden).
# Checked on the meta device: 3.75 B and 8.29 B parameters, as the released models.
GEOMETRY = {"3b": (2048, 36, 16, 2, 11008), "7b": (3584, 28, 28, 4, 18944)}


def geometry_config(name: str, tiny_model: Path):
    """The tiny model's config (special token ids) with a published geometry."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model)
    hidden, layers, heads, kv, mlp = GEOMETRY[name]
    t = config.text_config
    t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads = hidden, layers, heads, kv
    t.intermediate_size, t.vocab_size = mlp, 151936
    t.layer_types = ["full_attention"] * layers
    t.tie_word_embeddings = config.tie_word_embeddings = name == "3b"  # as published
    t.rope_parameters = {**t.rope_parameters, "mrope_section": [16, 24, 24]}  # head_dim 128
    v = config.vision_config
    v.depth, v.hidden_size, v.intermediate_size, v.num_heads = 32, 1280, 3420, 16
    v.out_hidden_size, v.window_size, v.fullatt_block_indexes = hidden, 112, [7, 15, 23, 31]
    return config


def build_geometry(name: str, out: Path) -> Path:
    """Random Qwen2.5-VL of a real geometry, saved with the tiny model's tokenizer/processor."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tiny_model = build_tiny(out / "tokenizer-src")
    model = Qwen2_5_VLForConditionalGeneration(geometry_config(name, tiny_model)).to(torch.bfloat16)
    model.save_pretrained(out / name)
    for f in tiny_model.iterdir():
        if f.name not in ("config.json", "model.safetensors", "generation_config.json"):
            (out / name / f.name).write_bytes(f.read_bytes())
    return out / name
