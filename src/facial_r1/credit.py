"""Per-reward token credit for GRPO (opt-in: `token_credit: true`): each reward's share of the
advantage goes only to the tokens of the block it judges (rewards.REWARD_BLOCKS: AU F1 ->
<think>, accuracy -> <answer>, format -> every token), in the spirit of the released trainer's
<think> mask for its AU reward. The shares add up to TRL's advantage.

TRL's loss takes (B, T) advantages as they are, but no public hook hands a subclass the
per-reward rewards, so `TokenCreditGRPOTrainer` overrides two private GRPOTrainer methods.
It is isolated here, the TRL versions it ran on are pinned in pyproject.toml, and
tests/test_credit.py runs TRL's own advantage code against it.
"""

from __future__ import annotations

from itertools import accumulate

from trl import GRPOTrainer

from facial_r1.errors import FacialR1Error
from facial_r1.parse import block_spans


class TokenCreditGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages are per token: `credit_blocks` names one block (or None,
    every token) per reward function, in the order of `reward_funcs`."""

    def __init__(self, *args, credit_blocks: list[str | None], **kwargs):
        super().__init__(*args, **kwargs)
        self.credit_blocks = credit_blocks
        self._rewards_per_func = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = out  # (all processes' completions, rewards)
        return out

    def _generate_and_score_completions(self, inputs):
        import trl

        out = super()._generate_and_score_completions(inputs)
        shares = reward_shares(self._rewards_per_func, self.reward_weights, self.num_generations, self.scale_rewards)
        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))
        # The shares must add up to the advantage TRL's own code just computed: a TRL release that
        # changes its advantage (or the private methods above) stops the run here, not silently.
        theirs = out["advantages"]
        if theirs.dim() != 1 or not bool((shares[local].sum(1).to(theirs) - theirs).abs().max() <= 1e-3):
            raise FacialR1Error(f"token_credit: TRL {trl.__version__}'s advantage is no longer the sum of the "
                                f"per-reward shares; token credit supports the TRL versions in pyproject.toml")
        masks = block_masks(self.processing_class, out["completion_ids"], out["completion_mask"])
        out["advantages"] = token_advantages(shares[local].to(out["completion_mask"].device), masks, self.credit_blocks)
        mode = "train" if self.model.training else "eval"
        for block in ("think", "answer"):  # how much of the completions each block is: the credit's reach
            share = masks[block].sum() / out["completion_mask"].sum().clamp(min=1)
            self._metrics[mode][f"credit/{block}_token_share"].append(share.item())
        return out


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
