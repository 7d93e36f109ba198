"""LoRA checkpoints are usable by every later stage: a LoRA stage saves its adapter merged into
its base (the adapter kept beside it), a folder holding only an adapter (a TRL checkpoint-N)
loads onto its base, and a second LoRA stage trains a new adapter on the merged model."""

import json

import matplotlib.cbook
import torch

from facial_r1 import evaluate, grpo, models, sft
from facial_r1.analyze import analyze

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def _logits(model, processor):
    ids = processor.tokenizer(["The brows are lowered (AU4)."], return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_lora_sft_then_lora_grpo_then_eval_and_analyze(tiny_model, synfacs_small, tmp_path):
    data = {"data_paths": [str(synfacs_small / "train.jsonl")], "image_folders": [str(synfacs_small)]}
    sft_out = sft.main("configs/sft/tiny-cpu.yaml", {
        "model": str(tiny_model), **data, "output_dir": str(tmp_path / "sft"), "max_steps": 3, "lora": {"r": 8},
        "vision_warmup_steps": 0, "instruct_warmup_steps": 0, "save_strategy": "steps", "save_steps": 2})
    # the stage's checkpoint is a whole model, the adapter merged in and kept beside it
    assert (sft_out / "config.json").is_file() and (sft_out / "adapter" / "adapter_config.json").is_file()
    assert not (sft_out / "adapter_config.json").is_file()
    record = json.loads((sft_out / models.LORA_RECORD).read_text())
    assert record["merged"] and record["base"] == str(tiny_model) and record["r"] == 8

    # merged = base + adapter, and the adapter learned something
    from peft import PeftModel

    base, processor = models.load(str(tiny_model))
    reference = _logits(base, processor)
    with_adapter = _logits(PeftModel.from_pretrained(base, str(sft_out / "adapter")), processor)
    merged, _ = models.load(str(sft_out))
    assert not torch.allclose(with_adapter, reference)
    assert torch.allclose(_logits(merged, processor), with_adapter, atol=1e-5)
    # a mid-run checkpoint holds only the adapter: it loads onto its base, merged
    [checkpoint] = (tmp_path / "sft").glob("checkpoint-*")
    assert (checkpoint / models.ADAPTER_CONFIG).is_file() and not (checkpoint / "config.json").is_file()
    mid, _ = models.load(str(checkpoint))
    assert not any("lora_" in n for n, _ in mid.named_parameters())
    # asking for LoRA again puts one new adapter on the merged model, not a second one on the first
    again, _ = models.load(str(sft_out), lora={"r": 4})
    assert {n.split("lora_A.")[1] for n, _ in again.named_parameters() if "lora_A." in n} == {"default.weight"}

    grpo_out = grpo.main("configs/grpo/tiny-cpu.yaml", {
        "model": str(sft_out), **data, "output_dir": str(tmp_path / "grpo"), "max_steps": 2, "lora": {"r": 8},
        "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 16, "save_strategy": "no"})
    assert json.loads((grpo_out / models.LORA_RECORD).read_text())["base"] == str(sft_out)
    assert json.loads((grpo_out / "trainer_state.json").read_text())["global_step"] == 2

    metrics = evaluate.main(str(grpo_out), str(synfacs_small / "test.jsonl"), [str(synfacs_small)], "synfacs",
                            str(tmp_path / "eval"), max_new_tokens=8)
    assert metrics["n_scored"] == 12
    rows = list(analyze([PHOTO], backend="vlm", model=str(grpo_out), batch_size=1, max_new_tokens=8))
    assert len(rows) == 1 and rows[0]["box"] and isinstance(rows[0]["reasoning"], str)


def test_a_full_run_after_a_lora_run_in_the_same_folder_drops_the_lora_record(tiny_model, synfacs_small, tmp_path):
    base = {"model": str(tiny_model), "data_paths": [str(synfacs_small / "train.jsonl")],
            "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path / "sft"), "max_steps": 1,
            "vision_warmup_steps": 0, "instruct_warmup_steps": 0, "save_strategy": "no"}
    out = sft.main("configs/sft/tiny-cpu.yaml", {**base, "lora": {"r": 4}})
    assert (out / models.LORA_RECORD).is_file()
    out = sft.main("configs/sft/tiny-cpu.yaml", base)  # full fine-tuning into the same folder
    assert not (out / models.LORA_RECORD).is_file() and not (out / models.ADAPTER_CONFIG).is_file()
    out = sft.main("configs/sft/tiny-cpu.yaml", {**base, "lora": {"r": 4}})  # and LoRA again over a full model
    assert json.loads((out / models.LORA_RECORD).read_text())["base"] == str(tiny_model)
