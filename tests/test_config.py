import pytest
import torch
from trl import SFTConfig

from facial_r1.config import load_stage_config, parse_overrides, training_dtype
from facial_r1.errors import FacialR1Error
from facial_r1.sft import SFTRun


@pytest.mark.parametrize("args, expected", [
    (["--learning_rate", "1e-4"], {"learning_rate": 1e-4}),
    (["--max_steps=5", "--bf16"], {"max_steps": 5, "bf16": True}),     # = form, bare flag
    (["--data_paths", "[a.jsonl, b.jsonl]"], {"data_paths": ["a.jsonl", "b.jsonl"]}),  # YAML list
    (["--lora", "{r: 8}"], {"lora": {"r": 8}}),
    (["--output-dir", "x"], {"output_dir": "x"}),                      # dashes -> underscores
])
def test_parse_overrides(args, expected):
    assert parse_overrides(args) == expected


def test_split_between_project_and_trl(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\nlearning_rate: 0.01\noutput_dir: out\nvision_warmup_steps: 5\n")
    run, args = load_stage_config(f, {"max_steps": 3, "use_cpu": True}, SFTRun, SFTConfig)
    assert (run.model, run.vision_warmup_steps) == ("m", 5)
    assert (args.learning_rate, args.max_steps, args.output_dir) == (0.01, 3, "out")


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\nlearning_rte: 0.01\n")
    with pytest.raises(FacialR1Error, match=r"unknown key\(s\) \['learning_rte'\]"):
        load_stage_config(f, {}, SFTRun, SFTConfig)


def test_shipped_configs_parse():
    from pathlib import Path

    root = Path(__file__).parent.parent / "configs" / "sft"
    for path in root.glob("*.yaml"):
        run, args = load_stage_config(path, {"use_cpu": True, "bf16": False, "deepspeed": None}, SFTRun, SFTConfig)
        assert run.model and args.output_dir


@pytest.mark.parametrize("dtype, deepspeed, lora, expected", [
    ("bfloat16", False, False, ("float32", "bf16")),  # one GPU, full fine-tuning: fp32 weights, bf16 autocast
    ("float16", False, False, ("float32", "fp16")),
    ("bfloat16", True, False, ("bfloat16", None)),  # DeepSpeed holds the fp32 master weights
    ("bfloat16", False, True, ("bfloat16", None)),  # LoRA: frozen bf16 base, fp32 adapters
    ("float32", False, False, ("float32", None)),  # the tiny CPU default
])
def test_training_dtype(dtype, deepspeed, lora, expected):
    assert training_dtype(dtype, deepspeed, lora) == expected


def test_bf16_full_fine_tuning_without_deepspeed_loads_float32_weights(tiny_model, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    run, args = load_stage_config(None, {"model": str(tiny_model), "dtype": "bfloat16", "use_cpu": True,
                                         "output_dir": "unused", "report_to": "none"}, SFTRun, SFTConfig)
    model, _ = run.load_model(args)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert args.bf16 and args.mixed_precision == "bf16"
    lora_run, lora_args = load_stage_config(None, {"model": str(tiny_model), "dtype": "bfloat16", "lora": {"r": 4},
                                                   "use_cpu": True, "output_dir": "unused"}, SFTRun, SFTConfig)
    model, _ = lora_run.load_model(lora_args)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
