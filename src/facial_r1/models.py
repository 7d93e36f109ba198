"""All Hugging Face glue: build the tiny default Qwen2.5-VL, and load any Qwen2.5-VL
(tiny or real, local path or hub name) with its processor, dtype, attention, pixel limits,
optional LoRA and optional frozen vision tower.

    facial-r1 model init-tiny --out runs/tiny-model [--size tiny|small]
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin

from facial_r1.errors import FacialR1Error

log = logging.getLogger(__name__)

# Face crops need far fewer visual tokens than Qwen's document-sized default (one token = 28x28 px).
FACE_MIN_PIXELS = 64 * 28 * 28
FACE_MAX_PIXELS = 256 * 28 * 28
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


def load(
    model: str,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    lora: dict | None = None,
    freeze_vision: bool = False,
):
    """Load (model, processor) from a local folder or a hub name.

    A local path never touches the hub. `lora` is a dict of `peft.LoraConfig` fields; by
    default it targets the language model's linear layers only (the vision tower is excluded).
    dtype "auto" (inference: analyze, eval, synthesis, serve) is bfloat16 where a CUDA GPU
    supports it, else float32; training stages pass their config's dtype.
    """
    if dtype == "auto":
        dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    from transformers import AutoModelForImageTextToText

    local = Path(model)
    if _looks_like_path(model) and (local / ADAPTER_CONFIG).is_file() and not (local / "config.json").is_file():
        return _load_adapter(local, dtype, attn_implementation, min_pixels, max_pixels, lora, freeze_vision)
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
            model, dtype=getattr(torch, dtype), attn_implementation=attn, local_files_only=local.is_dir() or None
        )
        processor = load_processor(model, min_pixels, max_pixels)
    except OSError as e:
        raise FacialR1Error(f"cannot load model {model}: {e}") from None
    if freeze_vision:
        for p in vision_parameters(net):
            p.requires_grad_(False)
    if lora:
        net = apply_lora(net, lora)
    return net, processor


ADAPTER_CONFIG = "adapter_config.json"


def _load_adapter(path: Path, dtype, attn_implementation, min_pixels, max_pixels, lora, freeze_vision):
    """A folder holding only a LoRA adapter (a TRL `checkpoint-N` of a LoRA run): its base model
    (`base_model_name_or_path`) with the adapter merged in, then, if `lora` is asked for, a new
    adapter on top of that, never a second one stacked on the first."""
    import json

    from peft import PeftModel

    base = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise FacialR1Error(f"{path}/{ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    log.info("%s is a LoRA adapter: merging it into its base %s", path, base)
    net, processor = load(base, dtype, attn_implementation, min_pixels, max_pixels)
    net = PeftModel.from_pretrained(net, str(path)).merge_and_unload()
    if any((path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        processor = load_processor(str(path), min_pixels, max_pixels)
    if freeze_vision:
        for p in vision_parameters(net):
            p.requires_grad_(False)
    return (apply_lora(net, lora) if lora else net), processor


def merge_adapter(out: str | Path, dtype: str) -> None:
    """After a LoRA stage saved its adapter to `out`: merge it into its base and save the merged
    model there, so that every later stage, eval, synthesis, analyze and serve load one plain
    checkpoint; the adapter moves to `out/adapter/` and `facial_r1_lora.json` records the merge.
    Works from the saved files, so it holds after DeepSpeed ZeRO-3 or FSDP gathered them."""
    import json

    out = Path(out)
    adapter_config = json.loads((out / ADAPTER_CONFIG).read_text())
    net, _ = _load_adapter(out, dtype, None, None, None, None, False)
    (out / "adapter").mkdir(exist_ok=True)
    for f in list(out.iterdir()):
        if f.name.startswith("adapter_") and f.is_file():
            f.replace(out / "adapter" / f.name)
    net.save_pretrained(str(out))
    (out / LORA_RECORD).write_text(json.dumps({
        "merged": True, "base": adapter_config.get("base_model_name_or_path"), "adapter": "adapter/",
        **{k: adapter_config.get(k) for k in ("r", "lora_alpha", "target_modules")}}, indent=2))
    log.info("LoRA adapter merged into %s (adapter kept in %s/adapter)", out, out)


LORA_RECORD = "facial_r1_lora.json"


def apply_lora(model, lora: dict):
    from peft import LoraConfig, get_peft_model

    fields = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": LM_LORA_TARGETS, **lora}
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **fields))


# Language-model linear layers only; the vision tower's modules live under `model.visual`.
LM_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def vision_parameters(model) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if ".visual." in f".{n}" or n.startswith("visual.")]


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") != 1


def _flash_attn_ok() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def generate(model, processor, images: Sequence, prompts: Sequence[str], max_new_tokens: int = 128,
             do_sample: bool = False, temperature: float = 1.0) -> list[str]:
    """Batched generation: one user turn (image + prompt) per item; returns the decoded replies."""
    inputs = processor(text=chat_texts(processor, prompts), images=list(images), return_tensors="pt",
                       padding=True).to(model.device)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample,
                             temperature=temperature if do_sample else None, top_p=None, top_k=None)
    new = out[:, inputs["input_ids"].shape[1]:]
    return processor.batch_decode(new, skip_special_tokens=True)


def chat_texts(processor, prompts: Sequence[str]) -> list[str]:
    """The model's input text for each prompt: one user turn (image + prompt), then the assistant's turn."""
    from facial_r1.prompts import user_message

    return [processor.apply_chat_template(user_message(p), add_generation_prompt=True, tokenize=False)
            for p in prompts]


ENGINES = ("auto", "hf", "vllm")


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise FacialR1Error(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return name


def resolve_engine(requested: str, num_processes: int = 1, vllm_installed: bool | None = None,
                   cuda: bool | None = None) -> str:
    """'hf' or 'vllm' for offline generation. auto: vLLM when it is installed, a GPU is there and one
    process runs (vLLM spreads over GPUs itself), else HF generate (one process per GPU).

    >>> resolve_engine("auto", vllm_installed=False, cuda=True)
    'hf'
    """
    check_engine(requested)
    vllm_installed = importlib.util.find_spec("vllm") is not None if vllm_installed is None else vllm_installed
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if requested == "vllm":
        if not vllm_installed:
            raise FacialR1Error("engine vllm: vLLM is not installed (pip install 'facial-r1[vllm]', on a CUDA machine)")
        if not cuda:
            raise FacialR1Error("engine vllm needs a CUDA GPU; use engine hf on this machine")
        if num_processes > 1:
            raise FacialR1Error("engine vllm runs in one process (it uses the GPUs through tensor_parallel_size "
                                "in vllm_args); start it without accelerate launch, or use engine hf")
    if requested == "auto":
        return "vllm" if vllm_installed and cuda and num_processes == 1 else "hf"
    return requested


def vllm_generator(model: str, processor, vllm_args: dict | None = None):
    """vLLM's offline engine behind `generate`'s call (minus model and processor): the same chat
    texts and the same face-crop pixel range as the HF path. `vllm_args` go to `vllm.LLM`."""
    from vllm import LLM, SamplingParams

    size = processor.image_processor.size
    llm = LLM(model=model, limit_mm_per_prompt={"image": 1},
              mm_processor_kwargs={"min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"]},
              **(vllm_args or {}))

    def run(images: Sequence, prompts: Sequence[str], max_new_tokens: int = 128, do_sample: bool = False,
            temperature: float = 1.0) -> list[str]:
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0)
        inputs = [{"prompt": text, "multi_modal_data": {"image": image}}
                  for text, image in zip(chat_texts(processor, prompts), images, strict=True)]
        return [out.outputs[0].text for out in llm.generate(inputs, params, use_tqdm=False)]

    return run


PROMPT_SETTINGS = "facial_r1_prompt.json"


def save_trained(trainer, processor, out: str | Path, prompt_style: str, max_new_tokens: int | None = None) -> Path:
    """End of a training stage: weights, processor, prompt settings (with the completion length
    it was trained to write, when the stage has one) and the log history (`trainer_state.json`,
    read by the pipeline's report), all loadable from `out`."""
    trainer.save_model(str(out))  # under ZeRO-3/FSDP every process takes part (gathering), the main one writes
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(str(out))
        write_prompt_settings(out, prompt_style, max_new_tokens)
        trainer.state.save_to_json(str(Path(out) / "trainer_state.json"))
        if (Path(out) / ADAPTER_CONFIG).is_file():  # this run saved an adapter (a merge moves it away)
            merge_adapter(out, str(next(trainer.model.parameters()).dtype).removeprefix("torch."))
        else:  # a full model: an earlier LoRA run's record in this folder no longer describes it
            (Path(out) / LORA_RECORD).unlink(missing_ok=True)
    trainer.accelerator.wait_for_everyone()
    return Path(out)


def write_prompt_settings(out: str | Path, prompt_style: str, max_new_tokens: int | None = None) -> None:
    """Record in a checkpoint which analysis prompt it was trained with and, after GRPO, how long a
    completion it learned to write (eval/inference reuse both)."""
    import json

    settings = {"prompt": prompt_style} | ({"max_new_tokens": max_new_tokens} if max_new_tokens else {})
    (Path(out) / PROMPT_SETTINGS).write_text(json.dumps(settings))


def process_state():
    """accelerate's view of this process: one, or one per GPU under `accelerate launch`
    (torchrun processes on a CPU machine too). Work is split with `split_between_processes`."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def read_prompt_settings(path: str | Path) -> dict:
    """The prompt a checkpoint was trained with; "full" for a hub name or a folder without one."""
    import json

    f = Path(path) / PROMPT_SETTINGS
    return json.loads(f.read_text()) if f.is_file() else {"prompt": "full"}
