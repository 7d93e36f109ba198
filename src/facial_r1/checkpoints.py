"""Checkpoints: the folder a training stage leaves (weights or a LoRA adapter, processor, prompt
settings, trainer state), in the form every later stage, eval or inference loads.

    facial-r1 merge CKPT    # a LoRA stage's adapter merged into the checkpoint it started from

A LoRA stage saves its adapter only: the folder loads anywhere (`load` puts the adapter on the
checkpoint the stage started from, itself perhaps an adapter folder: a chain). `merge` turns
it into one plain checkpoint, in a process of its own (never inside a DeepSpeed run).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import torch
from transformers import Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin

from facial_r1.errors import FacialR1Error

log = logging.getLogger(__name__)

# Face crops need far fewer visual tokens than Qwen's document-sized default (one token = 28x28 px).
FACE_MIN_PIXELS = 64 * 28 * 28
FACE_MAX_PIXELS = 256 * 28 * 28
ADAPTER_CONFIG = "adapter_config.json"
LORA_RECORD = "facial_r1_lora.json"
PROMPT_SETTINGS = "facial_r1_prompt.json"
# Language-model linear layers only; the vision tower's modules live under `model.visual`.
LM_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def load_processor(path: str, min_pixels: int | None = None, max_pixels: int | None = None):
    """The checkpoint's processor, with pixel limits for face crops.

    transformers' Qwen2.5-VL processor wants a video processor, which needs torchvision.
    Where torchvision is absent we assemble the same processor image-only (PIL backend).
    """
    from transformers import AutoProcessor, AutoTokenizer

    if importlib.util.find_spec("torchvision") is not None:
        processor = AutoProcessor.from_pretrained(path)
    else:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        processor = ImageOnlyQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=tokenizer.chat_template)
    size = processor.image_processor.size
    own_min, own_max = size["shortest_edge"], size["longest_edge"]
    # Default: Qwen's range intersected with the face-crop range (a checkpoint asking fewer keeps its own).
    new_max = max_pixels or min(own_max, FACE_MAX_PIXELS)
    new_min = min(min_pixels or max(own_min, FACE_MIN_PIXELS), new_max)
    processor.image_processor.size = {"shortest_edge": new_min, "longest_edge": new_max}
    processor.tokenizer.padding_side = "left"  # generation pads on the left; TRL's collators pad themselves
    return processor


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without the video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def save_pretrained(self, save_directory, **kwargs):
        """Save as the stock processor's parts, so AutoProcessor loads it where torchvision exists."""
        return save_processor(self, save_directory)


def save_processor(processor, out) -> list[str]:
    for part in (processor.tokenizer, processor.image_processor):
        if hasattr(part, "_set_processor_class"):
            part._set_processor_class("Qwen2_5_VLProcessor")
        part.save_pretrained(out)
    return [str(out)]


def load(model: str, dtype: str = "auto", attn_implementation: str | None = None, min_pixels: int | None = None,
         max_pixels: int | None = None, lora: dict | None = None, freeze_vision: bool = False):
    """Load (model, processor) from a local folder or a hub name.

    A local path never touches the hub. A folder holding only a LoRA adapter loads as the
    checkpoint it was trained from with the adapter merged in. `lora` (`peft.LoraConfig`
    fields) then puts one new adapter on top; by default it targets the language model's linear
    layers only. dtype "auto" (inference) is bfloat16 where a CUDA GPU supports it, else float32.
    """
    if dtype == "auto":
        dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    local = Path(model)
    if is_adapter_folder(model):
        net, processor = _load_with_adapter(local, dtype, attn_implementation, min_pixels, max_pixels)
    else:
        net, processor = _load_weights(model, dtype, attn_implementation, min_pixels, max_pixels)
    if freeze_vision:
        for p in vision_parameters(net):
            p.requires_grad_(False)
    return (apply_lora(net, lora, start=model) if lora else net), processor


def is_adapter_folder(model: str) -> bool:
    local = Path(model)
    return _looks_like_path(model) and (local / ADAPTER_CONFIG).is_file() and not (local / "config.json").is_file()


def _load_weights(model: str, dtype, attn_implementation, min_pixels, max_pixels):
    from transformers import AutoModelForImageTextToText

    local = Path(model)
    if _looks_like_path(model):
        if not local.is_dir():
            raise FacialR1Error(f"model path {model} does not exist")
        if not (local / "config.json").is_file():
            raise FacialR1Error(f"model path {model} has no config.json (not a saved model)")
        if not any((local / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
            raise FacialR1Error(f"model path {model} has no processor (preprocessor_config.json)")
    attn = attn_implementation or ("flash_attention_2" if _flash_attn_ok() else "sdpa")
    try:
        net = AutoModelForImageTextToText.from_pretrained(
            model, dtype=getattr(torch, dtype), attn_implementation=attn, local_files_only=local.is_dir() or None)
        processor = load_processor(model, min_pixels, max_pixels)
    except OSError as e:
        raise FacialR1Error(f"cannot load model {model}: {e}") from None
    return net, processor


def _load_with_adapter(path: Path, dtype, attn_implementation, min_pixels, max_pixels):
    """An adapter folder (a LoRA stage's output or a TRL `checkpoint-N` of one): the checkpoint
    its adapter was trained on (`base_model_name_or_path`, loaded by `load`, so a chain of
    adapter folders resolves down to full weights) with the adapter merged in."""
    from peft import PeftModel

    start = adapter_start(path)
    log.info("%s is a LoRA adapter: merging it into %s", path, start)
    net, processor = load(start, dtype, attn_implementation, min_pixels, max_pixels)
    net = PeftModel.from_pretrained(net, str(path)).merge_and_unload()
    if any((path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        processor = load_processor(str(path), min_pixels, max_pixels)
    return net, processor


def adapter_start(path: str | Path) -> str:
    """The checkpoint an adapter folder's adapter was trained on."""
    start = json.loads((Path(path) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not start:
        raise FacialR1Error(f"{path}/{ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    return start


def apply_lora(model, lora: dict, start: str):
    """One new LoRA adapter on `model`, recorded as trained on `start` (the checkpoint as given,
    which may itself be an adapter folder): loading or merging it later starts from there, not
    from the bottom of the chain, which would drop the adapters in between."""
    from peft import LoraConfig, get_peft_model

    fields = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": LM_LORA_TARGETS, **lora}
    net = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **fields))
    net.peft_config["default"].base_model_name_or_path = str(start)
    return net


def vision_parameters(model) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if ".visual." in f".{n}" or n.startswith("visual.")]


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") != 1


def _flash_attn_ok() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def is_lora(model) -> bool:
    """Whether a trained model object carries LoRA adapters (what decides a merge, not the files)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


# What a full checkpoint writes beside its processor; a LoRA save into the same folder removes
# them, so that the folder is read as the adapter it now holds.
FULL_WEIGHTS = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                "model-*.safetensors", "pytorch_model*.bin")


def save_trained(trainer, processor, out: str | Path, prompt_style: str, max_new_tokens: int | None = None) -> dict:
    """End of a training stage: weights (or the LoRA adapter), processor, prompt settings (with
    the completion length it was trained to write, when the stage has one) and the log history
    (`trainer_state.json`, read by the pipeline's report). Returns {"model": out, "lora": bool}.

    Every process takes part in `save_model` (ZeRO-3 gathers the shards), the main one writes.
    A LoRA stage's folder holds only its adapter ("default"; TRL's frozen "ref" copy is not
    kept) and `facial_r1_lora.json` with the chain of checkpoints it descends from."""
    out = Path(out)
    lora = is_lora(trainer.model)
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(str(out))
        write_prompt_settings(out, prompt_style, max_new_tokens)
        trainer.state.save_to_json(str(out / "trainer_state.json"))
        if lora:
            for name in trainer.model.peft_config:
                if name != "default":
                    shutil.rmtree(out / name, ignore_errors=True)  # PEFT saves other adapters in subfolders
            for pattern in FULL_WEIGHTS:
                for f in out.glob(pattern):
                    f.unlink()
            shutil.rmtree(out / "adapter", ignore_errors=True)  # an earlier merge's adapter
            start = trainer.model.peft_config["default"].base_model_name_or_path
            dtype = str(trainer.model.get_base_model().dtype).removeprefix("torch.")  # the merge's dtype
            _write_lora_record(out, {"merged": False, "start": start, "chain": lora_chain(start), "dtype": dtype})
        else:  # a full model: an earlier LoRA run's files in this folder no longer describe it
            (out / LORA_RECORD).unlink(missing_ok=True)
            shutil.rmtree(out / "adapter", ignore_errors=True)
            for f in out.glob("adapter_*"):
                f.unlink()
    trainer.accelerator.wait_for_everyone()
    return {"model": str(out), "lora": lora}


def lora_chain(start: str) -> list[str]:
    """The checkpoints `start` descends from, full weights first, `start` last."""
    record = Path(start) / LORA_RECORD
    if _looks_like_path(start) and record.is_file():
        return [*json.loads(record.read_text())["chain"], start]
    if is_adapter_folder(start):  # an adapter folder without a record (a merge's adapter/, a checkpoint-N)
        return [*lora_chain(adapter_start(start)), start]
    return [start]


def _write_lora_record(out: Path, record: dict) -> None:
    (out / LORA_RECORD).write_text(json.dumps(record, indent=2))


def merge(path: str | Path) -> Path:
    """One plain checkpoint in `path`, in the key layout `from_pretrained` and vLLM read, so that
    every later stage, eval, vLLM, analyze and serve load it as they load any model:

    - a LoRA stage's folder: its adapter merged into the checkpoint it started from (down the
      whole chain of adapter folders); the adapter moves to `path/adapter/`, the record says merged;
    - a full model (a DeepSpeed ZeRO-3 save writes `model.model.*` keys, which vLLM cannot map):
      loaded and saved again by transformers.

    Runs in one process: loading weights while a DeepSpeed ZeRO-3 config is live would
    partition them across processes that have moved on (a hang at the end of a run)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    path = Path(path)
    if is_deepspeed_zero3_enabled():
        raise FacialR1Error("merge runs in a process of its own, not under DeepSpeed ZeRO-3")
    record_file = path / LORA_RECORD
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if is_adapter_folder(str(path)):
        start = adapter_start(path)
        record = {"start": start, "chain": lora_chain(start), **record}
        net, processor = load(str(path), record.get("dtype") or _saved_dtype(record["chain"][0]))
        (path / "adapter").mkdir(exist_ok=True)
        for f in list(path.iterdir()):
            if f.is_file() and (f.name.startswith("adapter_") or f.name == "README.md"):
                f.replace(path / "adapter" / f.name)
        save_standard(net, path)
        processor.save_pretrained(str(path))
        _write_lora_record(path, {**record, "merged": True, "adapter": "adapter/"})
        log.info("LoRA adapter merged into %s (adapter kept in %s/adapter)", path, path)
        return path
    if not (path / "config.json").is_file():
        raise FacialR1Error(f"{path}: neither a model (config.json) nor a LoRA adapter ({ADAPTER_CONFIG})")
    net, _ = _load_weights(str(path), _saved_dtype(str(path)), None, None, None)
    for f in path.glob("model*.safetensors*"):  # a ZeRO-3 save's shards; the new ones replace them
        f.unlink()
    save_standard(net, path)
    log.info("%s saved again in the standard key layout", path)
    return path


def save_standard(net, path: Path) -> None:
    """Save weights in the layout transformers writes for a model it built itself (`model.layers.*`,
    `visual.*`, `lm_head.*`). A model loaded from a checkpoint is saved back in that checkpoint's
    layout, so the weights are first moved into a model built from the config."""
    from transformers import AutoModelForImageTextToText

    fresh = AutoModelForImageTextToText.from_config(net.config, dtype=net.dtype)
    fresh.load_state_dict(net.state_dict())
    fresh.generation_config = net.generation_config
    fresh.save_pretrained(str(path))


def _saved_dtype(model: str) -> str:
    """The dtype a checkpoint's weights were saved in (its config), float32 when it does not say."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return "float32"
    data = json.loads(config.read_text())
    return str(data.get("dtype") or data.get("torch_dtype") or "float32")


def write_prompt_settings(out: str | Path, prompt_style: str, max_new_tokens: int | None = None) -> None:
    """Record in a checkpoint which analysis prompt it was trained with and, after GRPO, how long a
    completion it learned to write (eval/inference reuse both)."""
    settings = {"prompt": prompt_style} | ({"max_new_tokens": max_new_tokens} if max_new_tokens else {})
    (Path(out) / PROMPT_SETTINGS).write_text(json.dumps(settings))


def read_prompt_settings(path: str | Path) -> dict:
    """The prompt a checkpoint was trained with; "full" for a hub name or a folder without one.
    An adapter folder without its own settings reads those of the checkpoint it starts from."""
    f = Path(path) / PROMPT_SETTINGS
    if f.is_file():
        return json.loads(f.read_text())
    return read_prompt_settings(adapter_start(path)) if is_adapter_folder(str(path)) else {"prompt": "full"}
