"""Verifiable rewards for GRPO, in TRL's contract:
``fn(completions, **dataset_columns) -> list[float | None]`` (None = this reward does not
apply to that sample; TRL skips it rather than scoring 0).

R = R_AU + R_acc + R_format (Facial-R1, equal weights). Configs pick them by name:
``reward_funcs: [au_f1, accuracy, format]`` with optional ``reward_weights``.

A row's emotion is its first label (the project's one multi-label rule, as the released
trainer's ``solution = labels[0]``). When the dataset has a ``reward_weight`` column (GRPO's
``au_rarity_weighting``, off by default), every reward of that row is multiplied by it, as the
released trainer multiplies each reward by its per-sample AU-rarity weight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from facial_r1.errors import FacialR1Error
from facial_r1.facs import try_normalize_au, try_normalize_emotion
from facial_r1.parse import completion_text, parse_completion

RewardFn = Callable[..., list]


def format_reward(completions, reward_weight=None, **kwargs) -> list[float]:
    """1.0 for exactly one think block followed by one answer block, else 0.0.

    >>> format_reward(["<think>lips up (AU12)</think><answer>Happiness</answer>", "Happy"])
    [1.0, 0.0]
    """
    return weighted([float(parse_completion(completion_text(c)).format_valid) for c in completions], reward_weight)


def accuracy_reward(completions, labels=None, reward_weight=None, **kwargs) -> list[float | None]:
    """1.0 when the answer is the sample's emotion (its first label), 0.0 if not, None without one.

    >>> accuracy_reward(["<answer>happy</answer>", "<answer>Sadness</answer>", "<answer>Fear</answer>", "x"],
    ...                 labels=[["Happiness"], "Happiness", ["Sadness", "Fear"], []])
    [1.0, 0.0, 0.0, None]
    """
    labels = labels if labels is not None else [None] * len(completions)
    out: list[float | None] = []
    for completion, gold in zip(completions, labels, strict=True):
        emotion = gold_emotion(gold)
        if emotion is None:
            out.append(None)
            continue
        out.append(float(parse_completion(completion_text(completion)).answer == emotion))
    return weighted(out, reward_weight)


def au_f1_reward(completions, AUs=None, reward_weight=None, **kwargs) -> list[float | None]:  # noqa: N803
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
    return weighted(out, reward_weight)


def au_f1_signed_reward(completions, AUs=None, reward_weight=None, **kwargs) -> list[float | None]:  # noqa: N803
    """The AU reward of Facial-R1's released trainer (`au_reward` in grpo_jsonl.py): 0 when the
    gold set is empty, -1 when no AU is cited, else 2*F1 - 1.

    >>> au_f1_signed_reward(["(AU4) (AU7)", "no units", "(AU9)", "no units", "(AU4)"],
    ...                     AUs=[["AU4", "AU7"], ["AU4"], ["AU4"], [], []])
    [1.0, -1.0, -1.0, 0.0, 0.0]
    """
    AUs = AUs if AUs is not None else [None] * len(completions)
    out: list[float | None] = []
    for completion, gold in zip(completions, AUs, strict=True):
        if gold is None:
            out.append(None)
            continue
        gold_set, cited = gold_aus(gold), set(parse_completion(completion_text(completion)).aus)
        out.append(0.0 if not gold_set else -1.0 if not cited else 2.0 * set_f1(cited, gold_set) - 1.0)
    return weighted(out, reward_weight)


def au_f1_inverse_frequency(au_lists: Sequence[Sequence[str] | None]) -> RewardFn:
    """The AU reward aimed at the benchmarks' macro F1 (every AU counts alike, however rare): a
    per-face F1 in which each AU weighs the inverse of its frequency among the GRPO rows' gold AUs
    (mean weight 1 over those AUs; an AU never true weighs as the rarest). Built per data set
    (the `au_f1_inverse_freq` reward).

    >>> fn = au_f1_inverse_frequency([["AU12"], ["AU12"], ["AU12", "AU4"]])
    >>> [round(r, 3) for r in fn(["(AU12)", "(AU12) (AU4)", "(AU4)"], AUs=[["AU12", "AU4"]] * 3)]
    [0.4, 1.0, 0.857]
    """
    counts = Counter(au for aus in au_lists for au in gold_aus(aus))
    inverse = {au: 1.0 / n for au, n in counts.items()}
    mean = sum(inverse.values()) / len(inverse) if inverse else 1.0
    weight = {au: w / mean for au, w in inverse.items()}
    rarest = max(weight.values(), default=1.0)

    def au_f1_inverse_freq_reward(completions, AUs=None, reward_weight=None, **kwargs) -> list[float | None]:  # noqa: N803
        AUs = AUs if AUs is not None else [None] * len(completions)  # noqa: N806
        out: list[float | None] = []
        for completion, gold in zip(completions, AUs, strict=True):
            if gold is None:
                out.append(None)
                continue
            cited, true = set(parse_completion(completion_text(completion)).aus), gold_aus(gold)
            if not cited and not true:
                out.append(1.0)
                continue
            w = [sum(weight.get(a, rarest) for a in x) for x in (cited & true, cited, true)]
            out.append(2.0 * w[0] / (w[1] + w[2]))
        return weighted(out, reward_weight)

    return au_f1_inverse_freq_reward


def weighted(rewards: list, weights) -> list:
    """Each reward times its row's weight (None stays None); no weights column: unchanged."""
    if weights is None:
        return rewards
    return [None if r is None else r * float(w) for r, w in zip(rewards, weights, strict=True)]


def au_rarity_weights(au_lists: Sequence[Sequence[str] | None], scale: float = 10.0, eps: float = 1e-6) -> list[float]:
    """Per-row weights of the released trainer's AU-rarity weighting (`compute_au_weights` and the
    loader of grpo_jsonl.py): an AU's weight is 1 / (its share of all AU occurrences + eps),
    normalised to sum 1; a row's raw weight is the sum over its gold AUs; raw weights are
    min-max normalised over the rows given (one data file) and multiplied by `scale` (10).

    >>> au_rarity_weights([["AU1"], ["AU1"], ["AU1", "AU2"]])
    [0.0, 0.0, 10.0]
    """
    counts = Counter(au for aus in au_lists for au in (aus or []))
    total = sum(counts.values())
    inverse = {au: 1.0 / (n / total + eps) for au, n in counts.items()}
    norm = sum(inverse.values()) or 1.0
    raw = [sum(inverse[au] / norm for au in (aus or [])) for aus in au_lists]
    low, high = min(raw, default=0.0), max(raw, default=0.0)
    span = high - low if high > low else 1.0
    return [scale * (r - low) / span for r in raw]


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


def gold_emotion(value) -> str | None:
    """A row's emotion from its `labels` value (a name or a list): the first label, normalised.

    >>> gold_emotion(["sad", "Fear"]), gold_emotion("happy"), gold_emotion([])
    ('Sadness', 'Happiness', None)
    """
    if not value:
        return None
    return try_normalize_emotion(value if isinstance(value, str) else list(value)[0])


REWARDS: dict[str, RewardFn] = {
    "au_f1": au_f1_reward,
    "au_f1_signed": au_f1_signed_reward,
    "accuracy": accuracy_reward,
    "format": format_reward,
}
# Rewards built from the GRPO rows' labels (a name -> factory of the rows' gold AU lists).
DATA_REWARDS: dict[str, Callable[[Sequence], RewardFn]] = {
    "au_f1_inverse_freq": au_f1_inverse_frequency,
}
KNOWN = sorted([*REWARDS, *DATA_REWARDS])

# The completion block each reward judges. With GRPO's `token_credit`, a reward's advantage goes to
# that block's tokens only (the released Facial-R1 trainer masks its AU reward to <think>); a
# reward not listed here judges the whole completion.
REWARD_BLOCKS: dict[str, str] = {
    "au_f1": "think",
    "au_f1_signed": "think",
    "au_f1_inverse_freq": "think",
    "accuracy": "answer",
}

# The dataset columns each reward reads; checked before training starts.
REWARD_COLUMNS: dict[str, tuple[str, ...]] = {
    "au_f1": ("AUs",),
    "au_f1_signed": ("AUs",),
    "au_f1_inverse_freq": ("AUs",),
    "accuracy": ("labels",),
    "format": (),
}


def resolve_rewards(
    names: Sequence[str], weights: Sequence[float] | None = None, au_lists: Sequence | None = None
) -> tuple[list[RewardFn], list[float]]:
    """Registry lookup with the checks a config needs: known names, matching weights. A reward
    built from the data (DATA_REWARDS) is built from `au_lists`, the rows' gold AUs."""
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise FacialR1Error(f"unknown reward(s) {unknown}; known: {KNOWN}")
    if not names:
        raise FacialR1Error("reward_funcs is empty; pick from " + ", ".join(KNOWN))
    weights = list(weights) if weights is not None else [1.0] * len(names)
    if len(weights) != len(names):
        raise FacialR1Error(
            f"{len(weights)} reward_weights for {len(names)} reward_funcs {list(names)}"
        )
    return ([REWARDS[n] if n in REWARDS else DATA_REWARDS[n](au_lists or []) for n in names],
            [float(w) for w in weights])


def check_reward_columns(names: Sequence[str], columns: Sequence[str], where: str) -> None:
    missing = sorted({c for n in names for c in REWARD_COLUMNS[n] if c not in columns})
    if missing:
        raise FacialR1Error(f"{where}: dataset lacks column(s) {missing} needed by rewards {list(names)}")
