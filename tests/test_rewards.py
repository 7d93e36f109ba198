import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facial_r1.errors import FacialR1Error
from facial_r1.rewards import (REWARDS, accuracy_reward, au_f1_reward, au_f1_signed_reward,
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
    (ANGER, None, None),
])
def test_au_f1_signed_reward(completion, gold, expected):
    assert au_f1_signed_reward([completion], AUs=[gold]) == [pytest.approx(expected) if expected is not None else None]


@pytest.mark.parametrize("completion, labels, expected", [
    (ANGER, ["Anger"], 1.0),
    (ANGER, "angry", 1.0),          # a bare string label is normalised
    (ANGER, ["Sadness"], 0.0),
    ("no tags", ["Anger"], 0.0),
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
