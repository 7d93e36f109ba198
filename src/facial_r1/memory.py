"""Per-GPU memory of a training stage's model states (weights, gradients, optimizer state), from
the estimators DeepSpeed and accelerate ship; activations are not counted.

    footprint = estimate(count_params("runs/qwen7b/sft"), "bfloat16", lora=None, engine=Engine(8, 1, zero_stage=3))

The preflight compares it with the GPUs' memory and refuses a stage that cannot fit; a stage
asked for bf16 full fine-tuning without DeepSpeed keeps float32 master weights only where they fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GIB = 2**30
# Share of a GPU's memory the model states may take: the rest is for activations, the CUDA
# context and the allocator's fragmentation (activations are not estimated).
HEADROOM = 0.85


@dataclass(frozen=True)
class Params:
    total: int
    trainable: int
    largest_layer: int  # parameters in the largest layer ZeRO-3 gathers at once


@dataclass(frozen=True)
class Engine:
    """How the training processes hold the model: plain (DDP or one process) or DeepSpeed ZeRO."""

    num_processes: int = 1
    num_machines: int = 1
    zero_stage: int | None = None  # None: no DeepSpeed
    offload_optimizer: bool = False
    offload_params: bool = False

    def describe(self) -> str:
        if self.zero_stage is None:
            return f"{self.num_processes} process(es), no DeepSpeed (each holds the whole model)"
        offload = [k for k, on in (("optimizer", self.offload_optimizer), ("parameters", self.offload_params)) if on]
        return (f"DeepSpeed ZeRO-{self.zero_stage} over {self.num_processes} GPU(s)"
                + (f", {' and '.join(offload)} offloaded to CPU" if offload else ""))


def current_engine(args=None) -> Engine:
    """The engine this stage process runs under (the environment accelerate/torchrun set)."""
    import os

    env = os.environ
    processes = int(env.get("WORLD_SIZE", "1"))
    machines = int(env.get("ACCELERATE_NUM_MACHINES", env.get("GROUP_WORLD_SIZE", "1")) or 1)
    deepspeed = env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" or bool(getattr(args, "deepspeed", None))
    if not deepspeed:
        return Engine(processes, machines)
    return Engine(processes, machines, int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")),
                  env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none") != "none",
                  env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none") != "none")


@dataclass(frozen=True)
class Footprint:
    per_gpu: int  # bytes of model states on each GPU
    weights_dtype: str  # the dtype the weights load in
    how: str  # which estimator, on what

    def gib(self) -> float:
        return self.per_gpu / GIB


def count_params(model: str, lora: dict | None = None, freeze_vision: bool = False) -> Params | None:
    """Parameter counts of a checkpoint, from its config alone (an empty model on the meta
    device, as `accelerate estimate-memory` builds it); None where the config is not at hand."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoConfig, AutoModelForImageTextToText

    from transformers.integrations import is_deepspeed_zero3_enabled

    from facial_r1 import checkpoints

    if is_deepspeed_zero3_enabled():  # inside a ZeRO-3 stage every model built is partitioned: none here
        return None
    source = checkpoints.adapter_start(model) if checkpoints.is_adapter_folder(model) else model
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=Path(source).is_dir() or None)
    except (OSError, ValueError) as e:
        log.info("no memory estimate for %s: its config is not at hand (%s)", model, e)
        return None
    with init_empty_weights():
        net = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        _, (largest, _) = calculate_maximum_sizes(net)  # bytes, float32
        total = sum(p.numel() for p in net.parameters())
        if lora:  # the adapters on the meta device too: nothing is allocated
            net = checkpoints.apply_lora(net, lora, start=model)
    if lora:
        trainable = sum(p.numel() for n, p in net.named_parameters() if "lora_" in n)
    elif freeze_vision:
        trainable = total - sum(p.numel() for p in checkpoints.vision_parameters(net))
    else:
        trainable = total
    return Params(total, trainable, largest // 4)


def estimate(params: Params, dtype: str, lora: dict | None, engine: Engine, upcast: bool = True) -> Footprint:
    """Model states per GPU. DeepSpeed: its ZeRO estimators (mixed precision, fp32 master
    weights and Adam). Without it: accelerate's training estimate (Adam) of the trainable
    weights, plus the frozen ones in their dtype. bf16/fp16 full fine-tuning without DeepSpeed
    keeps float32 weights under autocast when `upcast`, else trains the low-precision weights."""
    low = dtype in ("bfloat16", "float16")
    frozen = params.total - params.trainable
    if engine.zero_stage is not None:
        return _zero(params, engine, frozen)
    from accelerate.commands.estimate import estimate_training_usage

    if not low:
        states = max(estimate_training_usage(4 * params.trainable, "float32").values())
        return Footprint(states + 4 * frozen, "float32", "accelerate's float32 Adam estimate")
    if lora:
        states = max(estimate_training_usage(4 * params.trainable, "float32").values())  # fp32 adapters
        return Footprint(states + 2 * frozen, dtype, f"accelerate's Adam estimate (adapters) + frozen {dtype} weights")
    if upcast:
        states = max(estimate_training_usage(4 * params.trainable, "float32").values())
        return Footprint(states + 4 * frozen, "float32", f"accelerate's float32 Adam estimate ({dtype} autocast)")
    states = max(estimate_training_usage(4 * params.trainable, dtype).values())
    return Footprint(states + 2 * frozen, dtype, f"accelerate's {dtype} Adam estimate")


def _zero(params: Params, engine: Engine, frozen: int) -> Footprint:
    """DeepSpeed's own estimators (bytes per GPU). They assume every parameter trains; frozen
    ones (a LoRA base, a frozen tower) are added as 2-byte weights, partitioned under ZeRO-3."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    gpus = engine.num_processes // max(1, engine.num_machines)
    if engine.zero_stage == 3:
        _, gpu, _ = estimate_zero3_model_states_mem_needs(
            params.trainable, params.largest_layer, gpus, engine.num_machines, cpu_offload=engine.offload_optimizer,
            cpu_offload_params=engine.offload_params, zero_init=True)
        frozen_bytes = 0 if engine.offload_params else 2 * frozen // engine.num_processes
        return Footprint(gpu + frozen_bytes, "bfloat16", "DeepSpeed's ZeRO-3 estimate")
    _, gpu = estimate_zero2_model_states_mem_needs(params.trainable, gpus, engine.num_machines,
                                                   cpu_offload=engine.offload_optimizer)
    return Footprint(gpu + 2 * frozen, "bfloat16", f"DeepSpeed's ZeRO-{engine.zero_stage} estimate")


def fits(footprint: Footprint, gpu_bytes: int) -> bool:
    return footprint.per_gpu <= HEADROOM * gpu_bytes


def alternatives(model: str, params: Params, dtype: str, engine: Engine, gpu_bytes: int) -> list[str]:
    """What would fit, each with its estimate: LoRA, ZeRO-3 with CPU offload, more GPUs."""
    out = []
    lora = {"r": 64, "lora_alpha": 128}
    counted = count_params(model, lora)
    if counted is not None:
        need = estimate(counted, dtype, lora, Engine(engine.num_processes, engine.num_machines))
        out.append(f"LoRA (lora: {{r: 64, lora_alpha: 128}}): about {need.gib():.1f} GiB per GPU")
    try:
        offload = estimate(params, dtype, None, Engine(engine.num_processes, engine.num_machines, 3, True, True))
        out.append(f"ZeRO-3 with CPU offload (offload_optimizer_device and offload_param_device: cpu in the "
                   f"accelerate config): about {offload.gib():.1f} GiB per GPU")
        for n in (2, 4, 8, 16, 32, 64):
            if n > engine.num_processes:
                more = estimate(params, dtype, None, Engine(n, max(1, n // 8), 3))
                if fits(more, gpu_bytes):
                    out.append(f"ZeRO-3 over {n} GPUs: about {more.gib():.1f} GiB per GPU")
                    break
    except ImportError:
        out.append("DeepSpeed ZeRO-3 (pip install deepspeed), to partition the model over GPUs")
    return out


def training_dtype(dtype: str, deepspeed: bool, lora: bool, upcast_fits: bool = True) -> tuple[str, str | None]:
    """(dtype to load the weights in, autocast flag to turn on or None) for a training stage.

    Weights trained in bfloat16 lose small updates: at lr 1e-6 most round away. DeepSpeed keeps
    float32 master weights in its optimizer, so there the weights may load in bf16. Without it,
    full fine-tuning loads float32 and computes under autocast (TRL's `bf16`/`fp16`) where those
    float32 states fit on the GPU; where they do not, the weights stay in bf16 (said in the log).
    LoRA trains float32 adapters (PEFT casts them) on frozen base weights, which may stay in bf16.

    >>> training_dtype("bfloat16", deepspeed=False, lora=False)
    ('float32', 'bf16')
    """
    if dtype not in ("bfloat16", "float16") or deepspeed or lora or not upcast_fits:
        return dtype, None
    return "float32", "bf16" if dtype == "bfloat16" else "fp16"


def gpu_bytes() -> int | None:
    """This process's GPU memory, None without a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
