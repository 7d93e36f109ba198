"""Text generation from faces: one batch of (image, prompt) pairs in, one reply each out, through
HF `generate` or vLLM's offline engine, in the process share accelerate gives this process.

Eval, synthesis, analyze and serve all generate through here, with the same chat texts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch

from facial_r1.errors import FacialR1Error


def generate(model, processor, images: Sequence, prompts: Sequence[str], max_new_tokens: int = 128,
             do_sample: bool = False, temperature: float = 1.0, seed: int | None = None) -> list[str]:
    """Batched generation: one user turn (image + prompt) per item; returns the decoded replies.
    A sampled batch with a `seed` draws the same tokens every time."""
    if do_sample and seed is not None:
        torch.manual_seed(seed)
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
            temperature: float = 1.0, seed: int | None = None) -> list[str]:
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0,
                                seed=seed if do_sample else None)
        inputs = [{"prompt": text, "multi_modal_data": {"image": image}}
                  for text, image in zip(chat_texts(processor, prompts), images, strict=True)]
        return [out.outputs[0].text for out in llm.generate(inputs, params, use_tqdm=False)]

    return run


def process_state():
    """accelerate's view of this process: one, or one per GPU under `accelerate launch`
    (torchrun processes on a CPU machine too). Work is split with `split_between_processes`."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


