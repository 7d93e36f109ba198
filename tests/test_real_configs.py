"""Every shipped real config, end to end at toy scale, under the real engine: the 7B pipeline
config (with its SFT and GRPO configs) through `accelerate launch` with the shipped DeepSpeed
ZeRO-3 accelerate config on 2 CPU processes (gloo), LoRA included.

What differs from the shipped files, and why:
- the model: the tiny Qwen2.5-VL (the same classes and processor path) after a short SFT that
  taught it the format (`guided_model`), with the prompt style it was trained on (`question`:
  the tiny model cannot read the full prompt's instructions);
- the data: small FEA files written by the fea20k converter;
- the budgets: 2-3 steps per stage (checkpoints every 2), one round;
- the machine: `use_cpu`, float32 weights and compute instead of bf16 (CPU bf16 matmuls ran 7x slower here; the
  launcher's `--mixed_precision no` agrees), no dataloader worker processes.
This verifies the wiring (launch, sharding, saving, merging, resuming the chain), not GPU speed
or bf16 numerics.
"""

import json
import shutil

import pytest
import torch

from facial_r1 import checkpoints, pipeline
from facial_r1.data.converters import convert
from facial_r1.data.schema import read_jsonl, write_jsonl

pytestmark = pytest.mark.slow

LAUNCHER = ("accelerate launch --config_file configs/accelerate/zero3-8gpu.yaml --num_processes 2 "
            "--mixed_precision no")
MACHINE = {"use_cpu": True, "bf16": False, "dtype": "float32", "dataloader_num_workers": 0}
LORA = {"r": 8, "lora_alpha": 16}


@pytest.fixture(scope="module")
def cpu_deepspeed():
    """DeepSpeed on CPU: its accelerator is chosen by DS_ACCELERATOR (gloo for communication)."""
    import os

    old = {k: os.environ.get(k) for k in ("DS_ACCELERATOR", "OMP_NUM_THREADS")}
    os.environ.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def fea(synfacs_small, tmp_path_factory):
    """Seed (with reasoning), pool (labels only) and test FEA files, as the fea20k converter writes them."""
    src = tmp_path_factory.mktemp("fea_src")
    shutil.copytree(synfacs_small / "images", src / "images")
    train = read_jsonl(synfacs_small / "train.jsonl")
    write_jsonl(src / "seed.jsonl", [r for r in train if r["description"]])
    write_jsonl(src / "pool.jsonl", [r for r in train if not r["description"]])
    write_jsonl(src / "test.jsonl", read_jsonl(synfacs_small / "test.jsonl")[:8])
    out = tmp_path_factory.mktemp("fea")
    report = convert("fea20k", src, out)
    assert report["written"] == {"pool": 24, "seed": 24, "test": 8} and report["missing_images"] == 0
    return {"seed_data": str(out / "seed.jsonl"), "pool_data": str(out / "pool.jsonl"),
            "test_data": str(out / "test.jsonl"), "image_folders": [str(src)]}


@pytest.fixture(scope="module")
def run(guided_model, fea, cpu_deepspeed, tmp_path_factory):
    """The 7B pipeline at toy scale: full fine-tuning in SFT and GRPO, LoRA in the round's SFT and GRPO."""
    folder = tmp_path_factory.mktemp("qwen7b-toy")
    overrides = {
        "run_dir": str(folder), "model": str(guided_model), **fea, "launcher": LAUNCHER, "rounds": 1,
        "sft": {**MACHINE, "prompt": "question", "max_steps": 3, "save_steps": 2},
        "grpo": {**MACHINE, "max_steps": 2},
        "round_sft": {**MACHINE, "max_steps": 2, "lora": LORA},
        "round_grpo": {**MACHINE, "max_steps": 2, "lora": LORA},
    }
    assert pipeline.main("configs/pipeline/qwen2.5-vl-7b.yaml", overrides, check=True) is None  # the preflight
    report = pipeline.main("configs/pipeline/qwen2.5-vl-7b.yaml", overrides)
    return report.parent


def _results(run):
    return {p.name.split(".")[0]: json.loads(p.read_text()) for p in sorted((run / "stages").glob("*.result.json"))}


def test_every_stage_ran_under_zero3_on_two_processes(run):
    results = _results(run)
    assert list(results) == ["01-sft", "02-merge", "03-eval", "04-grpo", "05-merge", "06-eval", "07-synthesize",
                             "08-sft", "09-merge", "10-grpo", "11-merge", "12-eval"]
    for name, result in results.items():
        assert result["num_processes"] == (1 if name.endswith("merge") else 2), name
    assert [results[k]["lora"] for k in ("01-sft", "04-grpo", "08-sft", "10-grpo")] == [False, False, True, True]
    # the checkpoints really are ZeRO-3 shards, one per process
    shards = sorted(p.name for p in (run / "sft" / "checkpoint-2" / "global_step2").iterdir())
    assert "zero_pp_rank_0_mp_rank_00_model_states.pt" in shards and "zero_pp_rank_1_mp_rank_00_model_states.pt" in shards
    metrics = json.loads((run / "metrics.json").read_text())
    assert [r["role"] for r in metrics["rows"]] == ["sft", "grpo", "round"]
    # 2 steps x per-device 1 x accumulation 4 x 2 processes / 8 generations = 2 prompts
    assert ["GRPO", "2 prompts drawn from 24 pool faces (2 steps on 2 processes)"] in [r[:2] for r in metrics["trained_on"]]
    # GRPO learned from something: its groups' rewards spread (a model that writes the format)
    logs = json.loads((run / "grpo" / "trainer_state.json").read_text())["log_history"]
    assert all(x["frac_reward_zero_std"] < 1 and "kl" in x for x in logs if "loss" in x)


def test_every_checkpoint_is_plain_in_the_standard_layout(run):
    """The merge step rewrote ZeRO-3's `model.model.*` keys in the layout from_pretrained and vLLM
    read (`model.layers.*`, `visual.*`, `lm_head.*`), merged the LoRA stages, and left no adapter
    copy (TRL's `ref`) beside them."""
    from safetensors import safe_open

    for stage in ("sft", "grpo", "round1/sft", "round1/grpo"):
        folder = run / stage
        keys = list(safe_open(str(folder / "model.safetensors"), "pt").keys())
        assert {k.split(".")[0] for k in keys} == {"model", "visual", "lm_head"}, stage
        assert not any(k.startswith("model.model.") for k in keys) and any(k.startswith("model.layers.") for k in keys)
        assert not (folder / "ref").exists()
    record = json.loads((run / "round1" / "grpo" / checkpoints.LORA_RECORD).read_text())
    assert record["merged"] and record["start"] == str(run / "round1" / "sft")
    assert record["chain"][-2:] == [str(run / "grpo"), str(run / "round1" / "sft")]


def _logits(model, processor):
    ids = processor.tokenizer(["The brows are lowered (AU4)."], return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_the_merged_checkpoint_is_the_sharded_one(run):
    """DeepSpeed's own reader of the last ZeRO-3 checkpoint (its fp32 partitions of both ranks)
    gives the same model as the merged checkpoint the next stage starts from."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoModelForImageTextToText

    merged, processor = checkpoints.load(str(run / "sft"))
    shards = AutoModelForImageTextToText.from_config(merged.config)
    shards.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(run / "sft" / "checkpoint-3")))
    assert torch.allclose(_logits(shards, processor), _logits(merged, processor), atol=1e-4)


def test_a_lora_stage_from_an_adapter_folder_under_zero3(run, fea, tmp_path):
    """The chain: the round's SFT adapter (an adapter-only folder on top of GRPO's checkpoint) is the
    start of a LoRA GRPO stage under ZeRO-3; merged = GRPO's checkpoint + adapter 1 + adapter 2."""
    import subprocess
    import sys

    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    start = run / "round1" / "sft" / "adapter"
    assert checkpoints.is_adapter_folder(str(start))
    out = tmp_path / "grpo"
    words = LAUNCHER.split()
    command = [sys.executable, "-m", "accelerate.commands.launch", *words[2:], "-m", "facial_r1.cli", "grpo",
               "--config", "configs/grpo/qwen2.5-vl-7b.yaml", "--model", str(start), "--output_dir", str(out),
               "--data_paths", f"[{fea['pool_data']}]", "--image_folders", f"[{fea['image_folders'][0]}]",
               "--data_sampling", "null", "--max_steps", "2", "--learning_rate", "0.01",
               "--lora", json.dumps(LORA), *(f"--{k}={v}" for k, v in MACHINE.items())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert checkpoints.is_adapter_folder(str(out)) and not (out / "ref").exists()
    record = json.loads((out / checkpoints.LORA_RECORD).read_text())
    assert record["start"] == str(start) and record["chain"][-2:] == [str(run / "grpo"), str(start)]
    checkpoints.merge(out)
    merged, processor = checkpoints.load(str(out))
    first = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(str(run / "grpo")), str(start))
    first = first.merge_and_unload()
    before = _logits(first, processor)
    want = _logits(PeftModel.from_pretrained(first, str(out / "adapter")), processor)
    assert torch.allclose(_logits(merged, processor), want, atol=1e-4)
    assert not torch.allclose(before, want, atol=1e-4)  # adapter 2 changed the model
