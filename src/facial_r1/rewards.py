"""Verifiable rewards for GRPO, in TRL's contract:
``fn(completions, **dataset_columns) -> list[float | None]`` (None = this reward does not
apply to that sample; TRL skips it rather than scoring 0).

R = R_AU + R_acc + R_format (Facial-R1, equal weights). Configs pick them by name:
``reward_funcs: [au_f1, accuracy, format]`` with optional ``reward_weights``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from facial_r1.errors import FacialR1Error
from facial_r1.facs import try_normalize_au, try_normalize_emotion
from facial_r1.parse import completion_text, parse_completion


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 for exactly one think block followed by one answer block, else 0.0.

    >>> format_reward(["<think>lips up (AU12)</think><answer>Happiness</answer>", "Happy"])
    [1.0, 0.0]
    """
    return [float(parse_completion(completion_text(c)).format_valid) for c in completions]


def accuracy_reward(completions, labels=None, **kwargs) -> list[float | None]:
    """1.0 when the answer is the sample's emotion label, 0.0 if not, None without a label.

    >>> accuracy_reward(["<answer>happy</answer>", "<answer>Sadness</answer>", "x"],
    ...                 labels=[["Happiness"], "Happiness", []])
    [1.0, 0.0, None]
    """
    labels = labels if labels is not None else [None] * len(completions)
    out: list[float | None] = []
    for completion, gold in zip(completions, labels, strict=True):
        gold_set = gold_emotions(gold)
        if not gold_set:
            out.append(None)
            continue
        answer = parse_completion(completion_text(completion)).answer
        out.append(float(answer in gold_set))
    return out


def au_f1_reward(completions, AUs=None, **kwargs) -> list[float | None]:  # noqa: N803 (FEA column name)
    """F1 between the AUs cited in the reasoning and the gold AUs; None without AU labels.

    >>> au_f1_reward(["(AU4) (AU7)", "(AU4) (AU9)", "nothing"], AUs=[["AU4", "AU7"], ["AU4"], None])
    [1.0, 0.6666666666666666, None]
    """
    AUs = AUs if AUs is not None else [None] * len(completions)
    out: list[float | None] = []
    for completion, gold in zip(completions, AUs, strict=True):
        if gold is None:
            out.append(None)
            continue
        cited = set(parse_completion(completion_text(completion)).aus)
        out.append(set_f1(cited, gold_aus(gold)))
    return out


def au_f1_signed_reward(completions, AUs=None, **kwargs) -> list[float | None]:  # noqa: N803
    """The AU reward of Facial-R1's released code: 2*F1 - 1, and -1 when no AU is cited.

    >>> au_f1_signed_reward(["(AU4) (AU7)", "no units", "(AU9)"], AUs=[["AU4", "AU7"], ["AU4"], ["AU4"]])
    [1.0, -1.0, -1.0]
    """
    f1s = au_f1_reward(completions, AUs=AUs)
    out: list[float | None] = []
    for completion, f1 in zip(completions, f1s, strict=True):
        if f1 is None:
            out.append(None)
        elif not parse_completion(completion_text(completion)).aus:
            out.append(-1.0)
        else:
            out.append(2.0 * f1 - 1.0)
    return out


def set_f1(predicted: set[str], gold: set[str]) -> float:
    """F1 of two sets; two empty sets agree perfectly (1.0).

    >>> set_f1({"AU1", "AU2"}, {"AU2", "AU4"})
    0.5
    """
    if not predicted and not gold:
        return 1.0
    tp = len(predicted & gold)
    return 2.0 * tp / (len(predicted) + len(gold))


def gold_aus(value) -> set[str]:
    """The gold AU set from a dataset column value (list of names; unknown names dropped)."""
    return {au for au in (try_normalize_au(v) for v in (value or [])) if au is not None}


def gold_emotions(value) -> set[str]:
    """The gold emotion set from a `labels` value: a name, a list of names, or None."""
    if value is None:
        return set()
    values = [value] if isinstance(value, str) else list(value)
    return {e for e in (try_normalize_emotion(v) for v in values) if e is not None}


RewardFn = Callable[..., list]

REWARDS: dict[str, RewardFn] = {
    "au_f1": au_f1_reward,
    "au_f1_signed": au_f1_signed_reward,
    "accuracy": accuracy_reward,
    "format": format_reward,
}

# The dataset columns each reward reads; checked before training starts.
REWARD_COLUMNS: dict[str, tuple[str, ...]] = {
    "au_f1": ("AUs",),
    "au_f1_signed": ("AUs",),
    "accuracy": ("labels",),
    "format": (),
}


def resolve_rewards(
    names: Sequence[str], weights: Sequence[float] | None = None
) -> tuple[list[RewardFn], list[float]]:
    """Registry lookup with the checks a config needs: known names, matching weights."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise FacialR1Error(f"unknown reward(s) {unknown}; known: {sorted(REWARDS)}")
    if not names:
        raise FacialR1Error("reward_funcs is empty; pick from " + ", ".join(sorted(REWARDS)))
    weights = list(weights) if weights is not None else [1.0] * len(names)
    if len(weights) != len(names):
        raise FacialR1Error(
            f"{len(weights)} reward_weights for {len(names)} reward_funcs {list(names)}"
        )
    return [REWARDS[n] for n in names], [float(w) for w in weights]


def check_reward_columns(names: Sequence[str], columns: Sequence[str], where: str) -> None:
    missing = sorted({c for n in names for c in REWARD_COLUMNS[n] if c not in columns})
    if missing:
        raise FacialR1Error(f"{where}: dataset lacks column(s) {missing} needed by rewards {list(names)}")
