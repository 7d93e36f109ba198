"""Stage 2: GRPO with verifiable rewards (R = R_AU + R_acc + R_format) on TRL's GRPOTrainer.

    facial-r1 grpo --config configs/grpo/tiny-cpu.yaml [--key value ...] [--resume]

Rows carry only the prompt (face + analysis prompt) and the `AUs` / `labels` columns the
rewards read; no reasoning is needed, so GRPO can use the large label-only pool. Rewards are
picked by name from `facial_r1.rewards.REWARDS`, weighted by TRL's `reward_weights`.
Every GRPOConfig option (num_generations, temperature, beta, loss_type, use_vllm,
vllm_mode, ...) is a config key. TRL itself logs each reward's mean, the fraction of groups
with zero reward spread (`frac_reward_zero_std`), completion lengths and, with
`log_completions`, sample completions; this module adds the time split per phase.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from trl import GRPOConfig, GRPOTrainer

from facial_r1 import models
from facial_r1.config import StageRun, load_stage_config
from facial_r1.data.mixture import load_mixture
from facial_r1.errors import FacialR1Error
from facial_r1.prompts import prompt_for, user_message
from facial_r1.rewards import au_rarity_weights, check_reward_columns, resolve_rewards
from facial_r1.training import TimeLimit, has_checkpoint

log = logging.getLogger(__name__)


@dataclass
class GRPORun(StageRun):
    """facial-r1's own GRPO options; every other config key is a TRL `GRPOConfig` field."""

    model: str = "runs/tiny/sft"
    rewards: list = field(default_factory=lambda: ["au_f1", "accuracy", "format"])
    prompt: str | None = None  # None: as the checkpoint was trained (facial_r1_prompt.json)
    # Share of rows shown with the guided prompt of synthesis (true AUs + emotion given), under
    # the same rewards. It keeps the tiny model's guided-prompt skill from drifting in GRPO, and
    # teaches it to cite what it is told (an instruction-tuned model does that already; 0 = off).
    guided_fraction: float = 0.0
    # The released trainer's per-sample AU-rarity weighting (rewards.au_rarity_weights, per data
    # set): rows whose gold AUs are rare weigh up to 10x; the commonest weigh 0. Off by default.
    au_rarity_weighting: bool = False


def main(config: str | None, overrides: dict, resume: bool = False) -> Path:
    run, args = load_stage_config(config, overrides, GRPORun, GRPOConfig)
    reward_funcs, weights = resolve_rewards(run.rewards, args.reward_weights)
    args.reward_weights = weights
    samples, problems = load_mixture(run.data_paths, run.image_folders, run.data_sampling, args.seed)
    for p in problems:
        log.warning("skipped: %s", p)
    if not samples:
        raise FacialR1Error(f"{run.data_paths}: no usable samples for GRPO")
    prompt_style = run.prompt
    if prompt_style is None:
        prompt_style = models.read_prompt_settings(run.model)["prompt"]
    dataset = grpo_dataset(samples, prompt_style, run.guided_fraction, args.seed, run.au_rarity_weighting)
    check_reward_columns(run.rewards, dataset.column_names, ", ".join(map(str, run.data_paths)))
    log.info("GRPO on %d prompts, rewards %s with weights %s", len(dataset), run.rewards, weights)

    model, processor = run.load_model()
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[TimeLimit(run.max_train_minutes)] if run.max_train_minutes else None,
    )
    trainer.train(resume_from_checkpoint=has_checkpoint(args.output_dir, resume) or None)
    models.save_trained(trainer, processor, args.output_dir, prompt_style, args.max_completion_length)
    log.info("GRPO model saved to %s", args.output_dir)
    return Path(args.output_dir)


def grpo_dataset(samples: list[dict], prompt_style: str = "full", guided_fraction: float = 0.0, seed: int = 0,
                 au_rarity_weighting: bool = False):
    """Prompt-only rows (TRL puts the `image` column into the user turn) plus the label
    columns. A sample's missing labels stay None, so the rewards that need them skip it.
    A seeded `guided_fraction` of the samples with AUs and a label get the guided prompt.
    With `au_rarity_weighting`, a `reward_weight` column (per data set, as the released trainer
    weighs per file) multiplies every reward of the row."""
    import random

    from datasets import Dataset, Image

    rng = random.Random(seed)
    rows = [{"prompt": user_message(prompt_for(s, prompt_style, guided_fraction, rng)), "image": s["image_path"],
             "AUs": s["AUs"], "labels": s["labels"] or None, "id": s["id"]} for s in samples]
    if au_rarity_weighting:
        for name in sorted({s["dataset"] for s in samples}):
            group = [i for i, s in enumerate(samples) if s["dataset"] == name]
            for i, w in zip(group, au_rarity_weights([samples[i]["AUs"] for i in group]), strict=True):
                rows[i]["reward_weight"] = w
    # A label column no sample fills is absent (e.g. FER2013 has no AUs): a reward that
    # needs it would skip every sample, so check_reward_columns stops the run instead.
    empty = [c for c in ("AUs", "labels") if all(r[c] is None for r in rows)]
    rows = [{k: v for k, v in r.items() if k not in empty} for r in rows]
    return Dataset.from_list(rows).cast_column("image", Image())


class TimedGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that logs where a step's time goes (EasyR1-style phase split), beside TRL's
    `step_time`: `time/generate` (rollouts, including `time/prepare`: chat template, tokenizing
    and image processing of the prompts) and `time/reward` (parsing + rewards)."""

    def _tokenize_prompts(self, prompts):
        start = time.perf_counter()
        out = super()._tokenize_prompts(prompts)
        self._metrics[self._mode()]["time/prepare"].append(time.perf_counter() - start)
        return out

    def _generate(self, prompts):
        start = time.perf_counter()
        out = super()._generate(prompts)
        self._metrics[self._mode()]["time/generate"].append(time.perf_counter() - start)
        return out

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        start = time.perf_counter()
        out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._metrics[self._mode()]["time/reward"].append(time.perf_counter() - start)
        return out

    def _mode(self) -> str:
        return "train" if self.model.training else "eval"
