"""LoRA checkpoints: a LoRA stage saves its adapter (only the trained one: no `ref/` copy), with a
record of the chain of checkpoints it descends from; the folder loads anywhere as that chain with
the adapter merged in; `merge` (its own process step) turns it into one plain checkpoint, the
adapters of the whole chain included; a full run into the same folder drops the LoRA files."""

import json

import matplotlib.cbook
import pytest
import torch

from facial_r1 import checkpoints, evaluate, grpo, sft
from facial_r1.analyze import analyze
from facial_r1.errors import FacialR1Error

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def _logits(model, processor):
    ids = processor.tokenizer(["The brows are lowered (AU4)."], return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def _plain(path):
    """A checkpoint loaded by transformers and PEFT directly, not through facial-r1's loader."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(path))


def _data(synfacs_small):
    return {"data_paths": [str(synfacs_small / "train.jsonl")], "image_folders": [str(synfacs_small)]}


def test_lora_sft_then_lora_grpo_from_the_adapter_folder_then_merge(guided_model, synfacs_small, tmp_path):
    """The chain: LoRA SFT leaves an adapter folder (not merged); LoRA GRPO starts from that folder;
    merging GRPO's folder gives base + adapter 1 + adapter 2 (PEFT records the raw base as the second
    adapter's base, so a merge that followed PEFT's record would drop adapter 1). The base writes
    the format, so GRPO's rewards spread and its adapter learns."""
    from peft import PeftModel

    tiny_model = guided_model
    sft_out = sft.main("configs/sft/tiny-cpu.yaml", {
        "model": str(tiny_model), **_data(synfacs_small), "output_dir": str(tmp_path / "sft"), "max_steps": 3,
        "lora": {"r": 8}, "miniature": None, "learning_rate": 0.01, "warmup_steps": 0, "save_strategy": "steps",
        "save_steps": 2})
    # the stage's folder holds the adapter only (no stale full weights) and the record of its start
    assert (sft_out / checkpoints.ADAPTER_CONFIG).is_file() and not (sft_out / "config.json").is_file()
    record = json.loads((sft_out / checkpoints.LORA_RECORD).read_text())
    assert record == {"merged": False, "start": str(tiny_model), "chain": [str(tiny_model)], "dtype": "float32"}
    # a mid-run TRL checkpoint holds only the adapter: it loads onto its base, merged
    [checkpoint] = (tmp_path / "sft").glob("checkpoint-*")
    mid, _ = checkpoints.load(str(checkpoint))
    assert not any("lora_" in n for n, _ in mid.named_parameters())

    grpo_out = grpo.main("configs/grpo/tiny-cpu.yaml", {
        "model": str(sft_out), **_data(synfacs_small), "output_dir": str(tmp_path / "grpo"), "max_steps": 2,
        "lora": {"r": 8}, "learning_rate": 0.01, "per_device_train_batch_size": 4, "num_generations": 2,
        "max_completion_length": 64, "temperature": 1.2, "save_strategy": "no", "beta": 0.04, "miniature": None})
    assert not (grpo_out / "ref").exists()  # TRL's frozen reference copy of the adapter is not saved
    record = json.loads((grpo_out / checkpoints.LORA_RECORD).read_text())
    assert record["start"] == str(sft_out) and record["chain"] == [str(tiny_model), str(sft_out)]
    assert json.loads((grpo_out / checkpoints.ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == str(sft_out)

    unmerged, processor = checkpoints.load(str(grpo_out))  # the adapter folder loads down its chain
    checkpoints.merge(grpo_out)
    merged, _ = checkpoints.load(str(grpo_out))
    assert json.loads((grpo_out / checkpoints.LORA_RECORD).read_text())["merged"]
    assert (grpo_out / "adapter" / checkpoints.ADAPTER_CONFIG).is_file() and (grpo_out / "config.json").is_file()

    first = PeftModel.from_pretrained(_plain(tiny_model), str(sft_out)).merge_and_unload()
    after_first = _logits(first, processor)
    reference = PeftModel.from_pretrained(first, str(grpo_out / "adapter"))  # base + adapter 1 + adapter 2 (in place)
    want = _logits(reference, processor)
    assert torch.allclose(_logits(merged, processor), want, atol=1e-4)
    assert torch.allclose(_logits(unmerged, processor), want, atol=1e-4)
    assert not torch.allclose(after_first, want, atol=1e-3)  # adapter 2 learned something
    only_second = PeftModel.from_pretrained(_plain(tiny_model), str(grpo_out / "adapter"))
    assert not torch.allclose(_logits(only_second, processor), want, atol=1e-3)  # adapter 1 matters too

    metrics = evaluate.main(str(grpo_out), str(synfacs_small / "test.jsonl"), [str(synfacs_small)], "synfacs",
                            str(tmp_path / "eval"), max_new_tokens=8)
    assert metrics["n_scored"] == 12
    rows = list(analyze([PHOTO], backend="vlm", model=str(sft_out), batch_size=1, max_new_tokens=8))
    assert len(rows) == 1 and rows[0]["box"] and isinstance(rows[0]["reasoning"], str)  # an adapter folder serves


def test_asking_for_lora_on_a_merged_model_puts_one_new_adapter(tiny_model, synfacs_small, tmp_path):
    out = sft.main("configs/sft/tiny-cpu.yaml", {
        "model": str(tiny_model), **_data(synfacs_small), "output_dir": str(tmp_path / "sft"), "max_steps": 1,
        "lora": {"r": 4}, "miniature": None, "save_strategy": "no"})
    checkpoints.merge(out)
    again, _ = checkpoints.load(str(out), lora={"r": 4})
    assert {n.split("lora_A.")[1] for n, _ in again.named_parameters() if "lora_A." in n} == {"default.weight"}
    with pytest.raises(FacialR1Error, match="neither a model"):
        checkpoints.merge(tmp_path)


def test_a_full_run_and_a_lora_run_in_the_same_folder_leave_only_their_own_files(tiny_model, synfacs_small,
                                                                                  tmp_path):
    base = {"model": str(tiny_model), **_data(synfacs_small), "output_dir": str(tmp_path / "sft"), "max_steps": 1,
            "miniature": None, "save_strategy": "no"}
    out = sft.main("configs/sft/tiny-cpu.yaml", {**base, "lora": {"r": 4}})
    checkpoints.merge(out)
    assert (out / checkpoints.LORA_RECORD).is_file() and (out / "adapter").is_dir()
    out = sft.main("configs/sft/tiny-cpu.yaml", base)  # full fine-tuning into the same folder
    assert not (out / checkpoints.LORA_RECORD).is_file() and not (out / checkpoints.ADAPTER_CONFIG).is_file()
    assert not (out / "adapter").exists() and (out / "model.safetensors").is_file()
    out = sft.main("configs/sft/tiny-cpu.yaml", {**base, "lora": {"r": 4}})  # and LoRA again over a full model
    assert not (out / "config.json").is_file() and not (out / "model.safetensors").is_file()  # read as an adapter
    assert json.loads((out / checkpoints.LORA_RECORD).read_text())["start"] == str(tiny_model)


def test_merge_writes_a_zero3_save_in_the_standard_layout(tiny_model, tmp_path):
    """A ZeRO-3 save writes the language model as `model.model.*` (what transformers reverts its
    load-time renaming to under ZeRO-3), which vLLM cannot map. Here such a file is made by renaming
    the tiny model's keys; `merge` rewrites it as a plain save would, with the same weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "zero3"
    shutil.copytree(tiny_model, folder)
    weights = load_file(folder / "model.safetensors")
    save_file({k.replace("model.", "model.model.", 1) if k.startswith("model.") else k: v for k, v in weights.items()},
              folder / "model.safetensors", metadata={"format": "pt"})
    before, processor = checkpoints.load(str(folder))
    checkpoints.merge(folder)
    again = load_file(folder / "model.safetensors")
    assert set(again) == set(weights)  # the plain layout: model.layers.*, visual.*, lm_head.*
    after, _ = checkpoints.load(str(folder))
    assert torch.equal(_logits(after, processor), _logits(before, processor))
    reference, _ = checkpoints.load(str(tiny_model))
    assert torch.equal(_logits(after, processor), _logits(reference, processor))  # transformers read it right
