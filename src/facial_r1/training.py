"""Helpers the two training stages (sft.py, grpo.py) share: the model in its training dtype,
resuming, phase timers, the optional wall-time guard.

Budgets are counted in optimizer steps (TRL's `max_steps`), so the same command trains the
same model on any machine; `max_train_minutes` is only a guard against a runaway run, off in
the shipped configs, and a run it stops is not reproducible.
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from facial_r1 import checkpoints, memory

log = logging.getLogger(__name__)


def start(stage):
    """The opening of a training stage: the preflight under this process's engine, the resolved
    config in the log, the miniature section checked, the data mixture read.
    Returns (facial-r1 options, TRL config, miniature, samples)."""
    from facial_r1 import miniature, preflight
    from facial_r1.config import log_resolved
    from facial_r1.data.mixture import load_mixture

    preflight.check_stage_here(stage)
    log_resolved(stage)
    run, args = stage.build()
    mini = miniature.Miniature.from_config(run.miniature, run.model, stage.kind)
    samples, problems = load_mixture(run.data_paths, run.image_folders, run.data_sampling, args.seed)
    for p in problems:
        log.warning("skipped: %s", p)
    return run, args, mini, samples


def load_model(run, args):
    """(model, processor) for training: the weights in the dtype `memory.training_dtype` picks
    (float32 master weights under bf16/fp16 autocast where they fit on this GPU), with the
    stage's LoRA and frozen tower. Turns on the TRL config's autocast flag when it picks one."""
    engine = memory.current_engine(args)
    deepspeed = engine.zero_stage is not None
    upcast_fits = True
    gpu = memory.gpu_bytes()
    if gpu and run.dtype in ("bfloat16", "float16") and not deepspeed and not run.lora:
        params = memory.count_params(run.model, None, run.freeze_vision)
        if params is not None:
            upcast_fits = memory.fits(memory.estimate(params, run.dtype, None, engine, upcast=True), gpu)
            if not upcast_fits:
                log.warning("float32 master weights of %s do not fit on this GPU: training %s weights (small "
                            "updates may round away; DeepSpeed keeps float32 master weights off the GPU)",
                            run.model, run.dtype)
    dtype, autocast = memory.training_dtype(run.dtype, deepspeed, bool(run.lora), upcast_fits)
    if autocast:
        log.info("dtype %s without DeepSpeed: float32 weights (the optimizer's master copy) with %s autocast",
                 run.dtype, autocast)
        setattr(args, autocast, True)
        args.mixed_precision = autocast  # TrainingArguments derived it from the flags already
    with whole_weights(args, checkpoints.is_adapter_folder(run.model)):
        return checkpoints.load(run.model, dtype, run.attn_implementation, run.min_pixels, run.max_pixels, run.lora,
                                run.freeze_vision)


@contextmanager
def whole_weights(args, needed: bool):
    """Load weights whole in each process although a DeepSpeed ZeRO-3 config is live, when they
    must be changed before training: an adapter folder's adapter is merged into its start, which
    ZeRO-3's partitioned weights (0 elements per process) cannot take. DeepSpeed partitions the
    model when the trainer starts; until then each process holds all of it. transformers reads
    ZeRO-3 from the config accelerate's plugin keeps live (whatever zero3_init_flag says): it is
    unset while loading and set again by the plugin's own method."""
    from transformers.integrations import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    plugin = getattr(args, "deepspeed_plugin", None)
    if not needed or plugin is None or not is_deepspeed_zero3_enabled():
        yield
        return
    log.info("ZeRO-3: the start is an adapter folder, loaded whole in each process to merge its adapter")
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def has_checkpoint(output_dir: str, resume: bool) -> bool:
    return resume and any(Path(output_dir).glob("checkpoint-*"))


def callbacks(run) -> list:
    return [TimeLimit(run.max_train_minutes)] if run.max_train_minutes else []


class TimeLimit(TrainerCallback):
    """Stop training after a wall-clock budget (a guard; the budget itself is `max_steps`)."""

    def __init__(self, minutes: float):
        self.seconds, self.start = minutes * 60, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.start > self.seconds:
            log.warning("max_train_minutes reached at step %d: stopping (this run is not reproducible)",
                        state.global_step)
            control.should_training_stop = True
            control.should_save = True


class PhaseTimer(TrainerCallback):
    """GRPO's step split through public hooks only: the model's `generate` (timed from
    `on_train_begin`) and the reward functions (wrapped with `timed`), both logged through the
    `log_metric` TRL hands to reward functions, beside TRL's own `step_time`:
    `time/generate` (HF rollouts) and `time/reward/<reward>` (parsing + reward) per generation batch."""

    def __init__(self):
        self.generate_seconds = 0.0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and not getattr(model.generate, "_facial_r1_timed", False):
            inner = model.generate

            @functools.wraps(inner)
            def generate(*a, **k):
                start = time.perf_counter()
                try:
                    return inner(*a, **k)
                finally:
                    self.generate_seconds += time.perf_counter() - start

            generate._facial_r1_timed = True
            model.generate = generate

    def timed(self, rewards: list) -> list:
        """The reward functions, each logging its own time; the first of them also logs the
        rollouts' time since the last batch."""
        def wrap(fn, first: bool):
            @functools.wraps(fn)
            def reward(completions, **kwargs):
                start = time.perf_counter()
                out = fn(completions, **kwargs)
                log_metric = kwargs.get("log_metric")
                if log_metric is not None:
                    log_metric(f"time/reward/{fn.__name__}", time.perf_counter() - start)
                    if first:
                        log_metric("time/generate", self.generate_seconds)
                        self.generate_seconds = 0.0
                return out
            return reward
        return [wrap(fn, i == 0) for i, fn in enumerate(rewards)]
