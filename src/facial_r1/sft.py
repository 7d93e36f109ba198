"""Stage 1: supervised fine-tuning on AU-grounded reasoning, with TRL's SFTTrainer.

    facial-r1 sft --config configs/sft/tiny-cpu.yaml [--key value ...] [--resume]

Each example is (face image + analysis prompt) -> description; the loss covers only the
assistant reply (TRL prompt-completion format, completion_only_loss). Only samples that
carry a description are used (the small seed set of the method).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from facial_r1 import models
from facial_r1.config import load_stage_config
from facial_r1.data.mixture import load_mixture
from facial_r1.errors import FacialR1Error
from facial_r1.prompts import analysis_prompt, sft_messages
from facial_r1.warmstart import vision_warmup

log = logging.getLogger(__name__)


@dataclass
class SFTRun:
    """facial-r1's own SFT options; every other config key is a TRL `SFTConfig` field."""

    model: str = "runs/tiny-model"
    data_paths: list = field(default_factory=lambda: ["data/synfacs/train.jsonl"])
    image_folders: list = field(default_factory=lambda: ["data/synfacs"])
    data_sampling: list | None = None
    prompt_definitions: bool = True  # include the AU definitions in the prompt
    dtype: str = "float32"
    attn_implementation: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    lora: dict | None = None  # peft.LoraConfig fields; None = full fine-tuning
    freeze_vision: bool = False
    vision_warmup_seconds: float = 0.0  # tiny default only (see warmstart.py)
    vision_warmup_lr: float = 2e-3
    max_train_minutes: float | None = None  # stop after this wall time (CPU budgets)


def main(config: str | None, overrides: dict, resume: bool = False) -> Path:
    run, args = load_stage_config(config, overrides, SFTRun, SFTConfig)
    samples, problems = load_mixture(run.data_paths, run.image_folders, run.data_sampling, args.seed)
    for p in problems:
        log.warning("skipped: %s", p)
    seed_set = [s for s in samples if s["description"].strip()]
    if not seed_set:
        raise FacialR1Error(f"{run.data_paths}: no sample has a description to fine-tune on")
    log.info("SFT on %d samples with reasoning (of %d read)", len(seed_set), len(samples))

    model, processor = models.load(run.model, run.dtype, run.attn_implementation, run.min_pixels,
                                   run.max_pixels, run.lora, run.freeze_vision)
    if run.vision_warmup_seconds > 0 and not _has_checkpoint(args.output_dir, resume):
        vision_warmup(model, processor, samples, run.vision_warmup_seconds, run.vision_warmup_lr, seed=args.seed)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(seed_set, run.prompt_definitions),
        processing_class=processor,
        callbacks=[TimeLimit(run.max_train_minutes)] if run.max_train_minutes else None,
    )
    trainer.train(resume_from_checkpoint=_has_checkpoint(args.output_dir, resume) or None)
    trainer.save_model(args.output_dir)
    processor.save_pretrained(args.output_dir)
    models.write_prompt_settings(args.output_dir, run.prompt_definitions)
    log.info("SFT model saved to %s", args.output_dir)
    return Path(args.output_dir)


def sft_dataset(samples: list[dict], definitions: bool = True):
    """TRL prompt-completion rows with the face as a lazily decoded image."""
    from datasets import Dataset, Image, List

    rows = [{"prompt": sft_messages(analysis_prompt(s["question"], definitions), s["description"])[:1],
             "completion": sft_messages("", s["description"])[1:],
             "images": [s["image_path"]]} for s in samples]
    return Dataset.from_list(rows).cast_column("images", List(Image()))


def _has_checkpoint(output_dir: str, resume: bool) -> bool:
    return resume and any(Path(output_dir).glob("checkpoint-*"))


class TimeLimit(TrainerCallback):
    """Stop training after a wall-clock budget (the CPU pipeline gives each stage minutes)."""

    def __init__(self, minutes: float):
        self.seconds, self.start = minutes * 60, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.start > self.seconds:
            control.should_training_stop = True
            control.should_save = True
