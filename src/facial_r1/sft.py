"""Stage 1: supervised fine-tuning on AU-grounded reasoning, with TRL's SFTTrainer.

    facial-r1 sft --config configs/sft/tiny-cpu.yaml [--key value ...] [--resume] [--check]

Each example is (face image + analysis prompt) -> description; the loss covers only the
assistant reply (TRL prompt-completion format, completion_only_loss). Only samples that
carry a description are used (the small seed set of the method).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from trl import SFTConfig, SFTTrainer

from facial_r1 import checkpoints, miniature, training
from facial_r1.config import StageConfig, StageRun, resolve
from facial_r1.errors import FacialR1Error
from facial_r1.prompts import assistant_message, user_message

log = logging.getLogger(__name__)


@dataclass
class SFTRun(StageRun):
    """facial-r1's own SFT options; every other config key is a TRL `SFTConfig` field."""

    prompt: str = "full"  # analysis prompt style: full | instructions | question (prompts.py)


RUN_CLASS, TRL_CLASS = SFTRun, SFTConfig


def main(config: str | None, overrides: dict, resume: bool = False) -> Path:
    """The stage from a YAML file and overrides (the `facial-r1 sft` command)."""
    return Path(train(resolve(config, overrides, SFTRun, SFTConfig, "sft"), resume)["model"])


def train(stage: StageConfig, resume: bool = False) -> dict:
    """Train; returns {"model": output folder, "lora": whether it holds a LoRA adapter}."""
    run, args, mini, samples = training.start(stage)
    seed_set = [s for s in samples if s["description"].strip()]
    if not seed_set:
        raise FacialR1Error(f"{run.data_paths}: no sample has a description to fine-tune on")
    log.info("SFT on %d samples with reasoning (of %d read)", len(seed_set), len(samples))

    model, processor = training.load_model(run, args)
    resuming = training.has_checkpoint(args.output_dir, resume)
    if mini.vision_warmup_steps > 0 and not resuming:
        miniature.vision_warmup(model, processor, samples, mini.vision_warmup_steps, mini.vision_warmup_lr,
                                seed=args.seed, extra_faces=mini.vision_warmup_faces,
                                objective=mini.vision_warmup_objective)
    if mini.instruct_warmup_steps > 0 and not resuming:
        miniature.instruct_warmup(model, processor, args, mini.instruct_warmup_steps, run.prompt)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(seed_set, run.prompt, mini, args.seed),
        processing_class=processor,
        callbacks=training.callbacks(run),
    )
    trainer.train(resume_from_checkpoint=resuming or None)
    result = checkpoints.save_trained(trainer, processor, args.output_dir, run.prompt)
    log.info("SFT %s saved to %s", "LoRA adapter" if result["lora"] else "model", args.output_dir)
    return result


def sft_dataset(samples: list[dict], prompt_style: str = "full", mini: miniature.Miniature | None = None,
                seed: int = 0):
    """TRL prompt-completion rows with the face as a lazily decoded image (the miniature's
    guided rows among them, for the tiny model)."""
    from datasets import Dataset, Image, List

    mini, rng = mini or miniature.Miniature(), random.Random(seed)
    rows = [{"prompt": user_message(mini.prompt(s, prompt_style, rng)),
             "completion": assistant_message(s["description"]), "images": [s["image_path"]]} for s in samples]
    return Dataset.from_list(rows).cast_column("images", List(Image()))
