import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facial_r1.errors import FacialR1Error
from facial_r1.rewards import (REWARDS, accuracy_reward, au_f1_reward, au_f1_signed_reward, au_rarity_weights,
                               check_reward_columns, format_reward, resolve_rewards)

ANGER = "<think>brows together (AU4), lids tight (AU7)</think><answer>Anger</answer>"


@pytest.mark.parametrize("completion, gold, expected", [
    (ANGER, ["AU4", "AU7"], 1.0),               # exact
    (ANGER, ["AU4", "AU7", "AU23", "AU5"], 2 * 2 / 6),  # 2 of 4 gold cited: P=1, R=.5 -> .667
    (ANGER, ["AU12"], 0.0),                      # disjoint
    ("<think>calm</think><answer>Neutral</answer>", [], 1.0),  # nothing cited, nothing true
    (ANGER, None, None),                         # no AU labels -> skipped
])
def test_au_f1_reward(completion, gold, expected):
    assert au_f1_reward([completion], AUs=[gold]) == [pytest.approx(expected) if expected is not None else None]


@pytest.mark.parametrize("completion, gold, expected", [
    (ANGER, ["AU4", "AU7"], 1.0),
    (ANGER, ["AU4"], 2 * (2 / 3) - 1),
    ("<think>calm</think><answer>Anger</answer>", ["AU4"], -1.0),  # nothing cited
    ("<think>calm</think><answer>Neutral</answer>", [], 0.0),  # empty gold set: 0, as the released au_reward
    (ANGER, [], 0.0),                                          # ... whatever is cited
    (ANGER, None, None),
])
def test_au_f1_signed_reward(completion, gold, expected):
    assert au_f1_signed_reward([completion], AUs=[gold]) == [pytest.approx(expected) if expected is not None else None]


@pytest.mark.parametrize("completion, labels, expected", [
    (ANGER, ["Anger"], 1.0),
    (ANGER, "angry", 1.0),          # a bare string label is normalised
    (ANGER, ["Sadness"], 0.0),
    ("no tags", ["Anger"], 0.0),
    (ANGER, ["Sadness", "Anger"], 0.0),  # multi-label: the first label is the emotion
    (ANGER, ["Anger", "Sadness"], 1.0),
    (ANGER, [], None),              # no label -> skipped
    (ANGER, None, None),
])
def test_accuracy_reward(completion, labels, expected):
    assert accuracy_reward([completion], labels=[labels]) == [expected]


def test_format_reward_and_chat_completions():
    chat = [[{"role": "assistant", "content": ANGER}], [{"role": "assistant", "content": "Anger"}]]
    assert format_reward(chat) == [1.0, 0.0]
    assert au_f1_reward(chat, AUs=[["AU4", "AU7"], ["AU4"]]) == [1.0, 0.0]


def test_registry_and_checks():
    funcs, weights = resolve_rewards(["au_f1", "accuracy", "format"])
    assert funcs == [REWARDS["au_f1"], REWARDS["accuracy"], REWARDS["format"]] and weights == [1.0, 1.0, 1.0]
    with pytest.raises(FacialR1Error, match="unknown reward"):
        resolve_rewards(["au_f1", "nope"])
    with pytest.raises(FacialR1Error, match="2 reward_weights for 3"):
        resolve_rewards(["au_f1", "accuracy", "format"], [1, 1])
    with pytest.raises(FacialR1Error, match=r"lacks column\(s\) \['AUs'\]"):
        check_reward_columns(["au_f1", "format"], ["prompt", "labels"], "train.jsonl")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["AU1", "AU2", "AU4", "AU6", "AU12", "AU26"]), max_size=6),
       st.lists(st.sampled_from(["AU1", "AU2", "AU4", "AU6", "AU12", "AU26"]), max_size=6),
       st.text(max_size=30))
def test_rewards_bounded_and_subset_never_beats_exact(cited, gold, noise):
    text = "<think>" + noise.replace("<", "") + " ".join(f"({a})" for a in cited) + "</think><answer>Fear</answer>"
    r = au_f1_reward([text], AUs=[gold])[0]
    assert 0.0 <= r <= 1.0
    exact = "<think>" + " ".join(f"({a})" for a in gold) + "</think><answer>Fear</answer>"
    assert au_f1_reward([exact], AUs=[gold])[0] == 1.0 >= r   # citing fewer never beats the truth
    s = au_f1_signed_reward([text], AUs=[gold])[0]
    assert -1.0 <= s <= 1.0
    assert format_reward([text])[0] in (0.0, 1.0)


def released_au_reward(cited: set, gold: set) -> float:
    """Oracle: the released `au_reward` (RobitsG/Facial-R1 grpo_jsonl.py) with beta=1, restated."""
    if not gold:
        return 0.0
    if not cited:
        return -1.0
    inter = len(cited & gold)
    precision, recall = inter / len(cited), inter / len(gold)
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 2 * f - 1


@settings(max_examples=300, deadline=None)
@given(st.sets(st.sampled_from(["AU1", "AU2", "AU4", "AU6", "AU12", "AU26", "AU30"])),
       st.sets(st.sampled_from(["AU1", "AU2", "AU4", "AU6", "AU12", "AU26", "AU30"])))
def test_au_f1_signed_equals_the_released_reward(cited, gold):
    text = "<think>" + " ".join(f"({a})" for a in sorted(cited)) + "</think><answer>Fear</answer>"
    assert au_f1_signed_reward([text], AUs=[sorted(gold)])[0] == pytest.approx(released_au_reward(cited, gold))


@pytest.mark.parametrize("au_lists, expected", [
    # AU1 3 of 4 occurrences, AU2 1: inverse shares 4/3 and 4 -> normalised .25 / .75;
    # rows .25, .25, 1.0 -> min-max -> 0, 0, 1 -> x10
    ([["AU1"], ["AU1"], ["AU1", "AU2"]], [0.0, 0.0, 10.0]),
    # equal shares .5/.5; a row without AUs weighs 0 (raw 0 is the minimum)
    ([["AU1"], ["AU2"], [], None], [10.0, 10.0, 0.0, 0.0]),
    # every row the same: min = max, all 0 (the released loader divides by 1 then)
    ([["AU4"], ["AU4"]], [0.0, 0.0]),
    # AU1 2, AU2 1, AU4 1 of 4: inverse 2, 4, 4 -> .2, .4, .4; rows .2, .6, .4 -> 0, 1, .5
    ([["AU1"], ["AU1", "AU2"], ["AU4"]], [0.0, 10.0, 5.0]),
])
def test_au_rarity_weights_hand_computed(au_lists, expected):
    assert au_rarity_weights(au_lists) == pytest.approx(expected, abs=1e-4)


def test_reward_weight_column_multiplies_every_reward():
    w = [0.0, 2.5]
    assert format_reward([ANGER, ANGER], reward_weight=w) == [0.0, 2.5]
    assert accuracy_reward([ANGER, ANGER], labels=[["Anger"], []], reward_weight=w) == [0.0, None]
    assert au_f1_reward([ANGER, ANGER], AUs=[["AU4", "AU7"], ["AU4", "AU7"]], reward_weight=w) == [0.0, 2.5]


# gold AUs of the GRPO rows the weights come from: AU12 3 times, AU4 once (weights 0.5 and 1.5)
ROWS = [["AU12"], ["AU12"], ["AU12", "AU4"]]


@pytest.mark.parametrize("completion, gold, expected", [
    ("<think>(AU12) (AU4)</think>", ["AU12", "AU4"], 1.0),     # exact
    ("<think>(AU12)</think>", ["AU12", "AU4"], 2 * 0.5 / (0.5 + 2.0)),  # the common AU only: 0.4
    ("<think>(AU4)</think>", ["AU12", "AU4"], 2 * 1.5 / (1.5 + 2.0)),   # the rare AU only: 0.857
    ("<think>(AU12) (AU9)</think>", ["AU12"], 2 * 0.5 / (0.5 + 1.5 + 0.5)),  # AU9 never true: weighs as the rarest
    ("<think>calm</think>", [], 1.0),                           # nothing cited, nothing true
    ("<think>calm</think>", None, None),                        # no AU labels: skipped
])
def test_inverse_frequency_au_reward(completion, gold, expected):
    fn = resolve_rewards(["au_f1_inverse_freq"], None, ROWS)[0][0]
    assert fn([completion], AUs=[gold]) == [pytest.approx(expected) if expected is not None else None]


@settings(max_examples=200, deadline=None)
@given(cited=st.sets(st.sampled_from(["AU1", "AU4", "AU12", "AU25"])),
       gold=st.sets(st.sampled_from(["AU1", "AU4", "AU12", "AU25"])))
def test_inverse_frequency_au_reward_is_an_f1(cited, gold):
    """In [0, 1]; 1 exactly when the cited set is the gold set; equal weights give the plain F1."""
    text = "<think>" + " ".join(f"({a})" for a in sorted(cited)) + "</think><answer>Anger</answer>"
    rare = resolve_rewards(["au_f1_inverse_freq"], None, ROWS)[0][0]([text], AUs=[sorted(gold)])[0]
    assert 0.0 <= rare <= 1.0 and (rare == pytest.approx(1.0)) == (cited == gold)
    even = resolve_rewards(["au_f1_inverse_freq"], None, [["AU1", "AU4", "AU12", "AU25"]])[0][0]
    assert even([text], AUs=[sorted(gold)]) == pytest.approx(au_f1_reward([text], AUs=[sorted(gold)]))
