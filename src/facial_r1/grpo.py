"""Stage 2: GRPO with verifiable rewards (R = R_AU + R_acc + R_format) on TRL's GRPOTrainer.

    facial-r1 grpo --config configs/grpo/tiny-cpu.yaml [--key value ...] [--resume] [--check]

Rows carry only the prompt (face + analysis prompt) and the `AUs` / `labels` columns the
rewards read; no reasoning is needed, so GRPO can use the large label-only pool. Rewards are
picked by name from `facial_r1.rewards.REWARDS` (or built from the rows' labels, DATA_REWARDS), weighted by TRL's `reward_weights`.
Every GRPOConfig option (num_generations, temperature, beta, loss_type, use_vllm,
vllm_mode, ...) is a config key. TRL itself logs each reward's mean, the fraction of groups
with zero reward spread (`frac_reward_zero_std`), completion lengths, KL and, with
`log_completions`, sample completions; `training.PhaseTimer` adds the time split per phase.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from trl import GRPOConfig, GRPOTrainer

from facial_r1 import checkpoints, miniature, training
from facial_r1.config import StageConfig, StageRun, resolve
from facial_r1.errors import FacialR1Error
from facial_r1.prompts import user_message
from facial_r1.rewards import REWARD_BLOCKS, au_rarity_weights, check_reward_columns, resolve_rewards

log = logging.getLogger(__name__)


@dataclass
class GRPORun(StageRun):
    """facial-r1's own GRPO options; every other config key is a TRL `GRPOConfig` field."""

    model: str = "runs/tiny/sft"
    rewards: list = field(default_factory=lambda: ["au_f1", "accuracy", "format"])
    prompt: str | None = None  # None: as the checkpoint was trained (facial_r1_prompt.json)
    # The released trainer's per-sample AU-rarity weighting (rewards.au_rarity_weights, per data
    # set): rows whose gold AUs are rare weigh up to 10x; the commonest weigh 0. It scales the
    # row's rewards, so it needs an advantage that a group's own spread does not divide away
    # (scale_rewards: batch or none; the preflight refuses group). Off by default.
    au_rarity_weighting: bool = False
    # Per-reward token credit (credit.py): each reward's share of the advantage goes only to the
    # tokens of the block it judges. Off: every token gets the whole advantage, as in TRL.
    token_credit: bool = False
    # "shuffled": every row's AUs and emotion are another row's (a fixed derangement of the rows:
    # the same label marginals, the wrong face), for the rewards and the guided prompt alike. The
    # test bed's negative control: GRPO on right labels must beat it.
    reward_labels: str = "own"


RUN_CLASS, TRL_CLASS = GRPORun, GRPOConfig


def main(config: str | None, overrides: dict, resume: bool = False) -> Path:
    """The stage from a YAML file and overrides (the `facial-r1 grpo` command)."""
    return Path(train(resolve(config, overrides, GRPORun, GRPOConfig, "grpo"), resume)["model"])


def train(stage: StageConfig, resume: bool = False) -> dict:
    """Train; returns {"model": output folder, "lora": whether it holds a LoRA adapter}."""
    run, args, mini, samples = training.start(stage)
    if not samples:
        raise FacialR1Error(f"{run.data_paths}: no usable samples for GRPO")
    prompt_style = run.prompt or checkpoints.read_prompt_settings(run.model)["prompt"]
    if run.reward_labels == "shuffled":
        samples = shuffled_labels(samples, args.seed)
    elif run.reward_labels != "own":
        raise FacialR1Error(f"reward_labels must be own or shuffled, got {run.reward_labels!r}")
    reward_funcs, weights = resolve_rewards(run.rewards, args.reward_weights, [s["AUs"] for s in samples])
    args.reward_weights = weights
    dataset = grpo_dataset(samples, prompt_style, mini, args.seed, run.au_rarity_weighting)
    check_reward_columns(run.rewards, dataset.column_names, ", ".join(map(str, run.data_paths)))
    log.info("GRPO on %d prompts, rewards %s with weights %s", len(dataset), run.rewards, weights)

    model, processor = training.load_model(run, args)
    timer = training.PhaseTimer()
    common = dict(model=model, reward_funcs=timer.timed(reward_funcs), args=args, train_dataset=dataset,
                  processing_class=processor, callbacks=[timer, *training.callbacks(run)])
    if run.token_credit:
        from facial_r1.credit import TokenCreditGRPOTrainer

        trainer = TokenCreditGRPOTrainer(**common, credit_blocks=[REWARD_BLOCKS.get(n) for n in run.rewards])
    else:
        trainer = GRPOTrainer(**common)
    trainer.train(resume_from_checkpoint=training.has_checkpoint(args.output_dir, resume) or None)
    result = checkpoints.save_trained(trainer, processor, args.output_dir, prompt_style, args.max_completion_length)
    log.info("GRPO %s saved to %s", "LoRA adapter" if result["lora"] else "model", args.output_dir)
    return result


def shuffled_labels(samples: list[dict], seed: int = 0) -> list[dict]:
    """The samples with each one's AUs and labels taken from another sample (a derangement drawn
    from `seed`): the label marginals stay, the pairing with the face is broken.

    >>> [s["labels"] for s in shuffled_labels([{"AUs": [], "labels": [e]} for e in "ABC"], seed=0)]
    [['C'], ['A'], ['B']]
    """
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    out = [dict(s) for s in samples]
    for i, j in zip(order, order[1:] + order[:1], strict=True):
        out[i]["AUs"], out[i]["labels"] = samples[j]["AUs"], samples[j]["labels"]
    return out


def grpo_dataset(samples: list[dict], prompt_style: str = "full", mini: miniature.Miniature | None = None,
                 seed: int = 0, au_rarity_weighting: bool = False):
    """Prompt-only rows (TRL puts the `image` column into the user turn) plus the label
    columns. A sample's missing labels stay None, so the rewards that need them skip it.
    With `au_rarity_weighting`, a `reward_weight` column (per data set, as the released trainer
    weighs per file) multiplies every reward of the row."""
    from datasets import Dataset, Image

    mini, rng = mini or miniature.Miniature(), random.Random(seed)
    rows = [{"prompt": user_message(mini.prompt(s, prompt_style, rng)), "image": s["image_path"],
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
