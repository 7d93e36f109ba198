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
from itertools import accumulate
from dataclasses import dataclass, field
from pathlib import Path

from trl import GRPOConfig, GRPOTrainer

from facial_r1 import models
from facial_r1.config import StageRun, load_stage_config
from facial_r1.data.mixture import load_mixture
from facial_r1.errors import FacialR1Error
from facial_r1.parse import block_spans
from facial_r1.prompts import prompt_for, user_message
from facial_r1.rewards import REWARD_BLOCKS, au_rarity_weights, check_reward_columns, resolve_rewards
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
    # Per-reward token credit: each reward's share of the advantage goes only to the tokens of the
    # block it judges (rewards.REWARD_BLOCKS: AU F1 -> <think>, accuracy -> <answer>, format -> all),
    # in the spirit of the released trainer's <think> mask for its AU reward. The shares add up to
    # TRL's advantage; off (False) gives every token the whole advantage, as TRL does.
    token_credit: bool = False


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

    if run.token_credit and args.multi_objective_aggregation != "sum_then_normalize":
        raise FacialR1Error("token_credit: true needs multi_objective_aggregation: sum_then_normalize "
                            "(per-reward shares of a summed advantage)")

    model, processor = run.load_model(args)
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[TimeLimit(run.max_train_minutes)] if run.max_train_minutes else None,
    )
    trainer.credit_blocks = [REWARD_BLOCKS.get(name) for name in run.rewards] if run.token_credit else None
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
    and image processing of the prompts) and `time/reward` (parsing + rewards). With
    `credit_blocks` (one block name or None per reward), advantages become per token
    (`reward_shares`, `token_advantages`); TRL's loss takes (B, T) advantages as they are."""

    credit_blocks: list[str | None] | None = None
    # TRL's private methods this class wraps (tested against the installed TRL: a release that
    # renames one fails tests/test_grpo.py loudly; `make` installs the tested TRL, constraints.txt)
    TRL_PRIVATE = ("_generate_and_score_completions", "_tokenize_prompts", "_generate", "_calculate_rewards")

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.credit_blocks is None:
            return out
        shares = reward_shares(self._rewards_per_func, self.reward_weights, self.num_generations,
                               self.scale_rewards)
        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))
        masks = block_masks(self.processing_class, out["completion_ids"], out["completion_mask"])
        out["advantages"] = token_advantages(shares[local].to(out["completion_mask"].device), masks, self.credit_blocks)
        mode = self._mode()
        for block in ("think", "answer"):  # how much of the completions each block is: the credit's reach
            share = masks[block].sum() / out["completion_mask"].sum().clamp(min=1)
            self._metrics[mode][f"credit/{block}_token_share"].append(share.item())
        return out

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
        self._rewards_per_func = out  # (all processes' completions, rewards); token credit splits it
        return out

    def _mode(self) -> str:
        return "train" if self.model.training else "eval"


def reward_shares(rewards_per_func, weights, num_generations: int, scale_rewards: str):
    """(N, R) each reward's share of the GRPO advantage: its weighted reward minus its group mean,
    divided by the spread of the summed reward as TRL divides (scale_rewards group / batch / none).
    A completion's shares add up to TRL's sum_then_normalize advantage (a skipped reward, NaN,
    counts 0 as in TRL's sum; a completion every reward skipped gets 0).

    >>> import torch
    >>> reward_shares(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 1.0]), 2, "none")
    tensor([[ 0.5000, -0.5000],
            [-0.5000,  0.5000]])
    """
    import torch
    from trl.trainer.utils import nanstd

    n, r = rewards_per_func.shape
    unscorable = torch.isnan(rewards_per_func).all(dim=1)  # every reward skipped it: TRL gives it no advantage
    filled = torch.nan_to_num(rewards_per_func, nan=0.0)  # as TRL's nansum counts a skipped reward
    filled[unscorable] = torch.nan
    grouped = filled.view(-1, num_generations, r)
    centered = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)) * weights.to(grouped.device)
    shares = torch.nan_to_num(centered, nan=0.0).view(n, r)
    if scale_rewards == "none":
        return shares
    total = (filled * weights.to(grouped.device)).sum(dim=1)  # NaN where unscorable
    if scale_rewards == "group":
        std = nanstd(total.view(-1, num_generations), dim=1).repeat_interleave(num_generations)
    else:
        std = nanstd(total).expand(n)
    return shares / (torch.nan_to_num(std, nan=0.0) + 1e-4).unsqueeze(1)


def block_masks(tokenizer, completion_ids, completion_mask) -> dict:
    """{"think", "answer", "all"} -> (B, T) 0/1 masks of the completion tokens that fall in each
    block's content (parse.block_spans on the decoded tokens), "all" being the completion mask."""
    import torch

    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor holds its tokenizer
    masks = {"think": torch.zeros_like(completion_mask), "answer": torch.zeros_like(completion_mask),
             "all": completion_mask}
    for b, (ids, keep) in enumerate(zip(completion_ids.tolist(), completion_mask.tolist(), strict=True)):
        pieces = [tokenizer.decode([i]) if k else "" for i, k in zip(ids, keep, strict=True)]
        offsets = [0, *accumulate(map(len, pieces))]  # token t spans characters offsets[t]:offsets[t + 1]
        for block, (start, end) in block_spans("".join(pieces)).items():
            for t, piece in enumerate(pieces):
                if piece and offsets[t] < end and offsets[t + 1] > start:  # it overlaps the block's content
                    masks[block][b, t] = 1
    return masks


def token_advantages(shares, masks: dict, blocks: list[str | None]):
    """(B, T) advantages: each reward's share on the tokens of its block (None: every token)."""
    out = 0
    for r, block in enumerate(blocks):
        out = out + shares[:, r:r + 1] * masks[block or "all"]
    return out.float()
