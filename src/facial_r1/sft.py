"""Stage 1: supervised fine-tuning on AU-grounded reasoning, with TRL's SFTTrainer.

    facial-r1 sft --config configs/sft/tiny-cpu.yaml [--key value ...] [--resume]

Each example is (face image + analysis prompt) -> description; the loss covers only the
assistant reply (TRL prompt-completion format, completion_only_loss). Only samples that
carry a description are used (the small seed set of the method).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from trl import SFTConfig, SFTTrainer

from facial_r1 import models
from facial_r1.config import StageRun, load_stage_config
from facial_r1.data.mixture import load_mixture
from facial_r1.errors import FacialR1Error
from facial_r1.prompts import assistant_message, prompt_for, user_message
from facial_r1.training import TimeLimit, has_checkpoint
from facial_r1.warmstart import instruct_row_count, instruct_rows, vision_warmup

log = logging.getLogger(__name__)


@dataclass
class SFTRun(StageRun):
    """facial-r1's own SFT options; every other config key is a TRL `SFTConfig` field."""

    prompt: str = "full"  # analysis prompt style: full | instructions | question (prompts.py)
    vision_warmup_steps: int = 0  # tiny default only (see warmstart.py); optimizer steps of batch 32
    vision_warmup_lr: float = 2e-3
    vision_warmup_faces: int = 0  # extra SynFACS faces rendered for the warm-start only
    vision_warmup_objective: str = "labels"  # labels (AUs + emotion) | selfsup (no AU/emotion label)
    # Share of examples shown with the guided prompt (true AUs + emotion given) instead of the
    # analysis prompt. A real instruction-tuned model follows the guided prompt of synthesis
    # out of the box; the tiny model has to be shown it (0 = off).
    guided_fraction: float = 0.0
    # Tiny default only: optimizer steps of text-only guided prompts (random AU lists, random
    # emotions, no face) before SFT, a stand-in for a real VLM's instruction tuning (warmstart.py).
    instruct_warmup_steps: int = 0


def main(config: str | None, overrides: dict, resume: bool = False) -> Path:
    run, args = load_stage_config(config, overrides, SFTRun, SFTConfig)
    samples, problems = load_mixture(run.data_paths, run.image_folders, run.data_sampling, args.seed)
    for p in problems:
        log.warning("skipped: %s", p)
    seed_set = [s for s in samples if s["description"].strip()]
    if not seed_set:
        raise FacialR1Error(f"{run.data_paths}: no sample has a description to fine-tune on")
    log.info("SFT on %d samples with reasoning (of %d read)", len(seed_set), len(samples))

    model, processor = run.load_model(args)
    if run.vision_warmup_steps > 0 and not has_checkpoint(args.output_dir, resume):
        vision_warmup(model, processor, samples, run.vision_warmup_steps, run.vision_warmup_lr, seed=args.seed,
                      extra_faces=run.vision_warmup_faces, objective=run.vision_warmup_objective)
    if run.instruct_warmup_steps > 0 and not has_checkpoint(args.output_dir, resume):
        instruct_warmup(model, processor, args, run.instruct_warmup_steps, run.prompt)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(seed_set, run.prompt, run.guided_fraction, args.seed),
        processing_class=processor,
        callbacks=[TimeLimit(run.max_train_minutes)] if run.max_train_minutes else None,
    )
    trainer.train(resume_from_checkpoint=has_checkpoint(args.output_dir, resume) or None)
    models.save_trained(trainer, processor, args.output_dir, run.prompt)
    log.info("SFT model saved to %s", args.output_dir)
    return Path(args.output_dir)


def instruct_warmup(model, processor, args: SFTConfig, steps: int, prompt_style: str) -> None:
    """The instruction warm-start (see warmstart.instruct_rows): TRL's SFTTrainer with the stage's
    own settings, for `steps` steps on text-only rows, saving nothing."""
    from dataclasses import replace

    from datasets import Dataset

    rows = instruct_rows(instruct_row_count(steps, vars(args)), args.seed, prompt_style)
    warm = replace(args, max_steps=steps, save_strategy="no", output_dir=str(Path(args.output_dir) / "instruct"))
    SFTTrainer(model=model, args=warm, train_dataset=Dataset.from_list(rows), processing_class=processor).train()
    log.info("instruction warm-start: %d steps on %d text-only guided prompts (no face)", steps, len(rows))


def sft_dataset(samples: list[dict], prompt_style: str = "full", guided_fraction: float = 0.0, seed: int = 0):
    """TRL prompt-completion rows with the face as a lazily decoded image; a seeded
    `guided_fraction` of them use the guided prompt (only samples with AUs and a label)."""
    import random

    from datasets import Dataset, Image, List

    rng = random.Random(seed)
    rows = [{"prompt": user_message(prompt_for(s, prompt_style, guided_fraction, rng)),
             "completion": assistant_message(s["description"]), "images": [s["image_path"]]} for s in samples]
    return Dataset.from_list(rows).cast_column("images", List(Image()))
