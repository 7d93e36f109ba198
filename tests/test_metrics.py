import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from facial_r1.metrics import au_metrics, emotion_metrics, per_au_f1, rege, rouge_l

# 4 samples, AUs scored: AU1, AU2
PRED = [{"AU1"}, {"AU1", "AU2"}, set(), {"AU2"}]
GOLD = [{"AU1"}, {"AU1"}, {"AU2"}, {"AU2"}]


def test_per_au_f1_hand_computed():
    # AU1: tp=2 fp=0 fn=0 -> 1.0 ; AU2: tp=1 fp=1 fn=1 -> 0.5
    assert per_au_f1(PRED, GOLD, ["AU1", "AU2"]) == {"AU1": 1.0, "AU2": 0.5}
    m = au_metrics(PRED, GOLD, ["AU1", "AU2"])
    assert m["mean_f1"] == pytest.approx(0.75)
    # micro: tp=3, predicted=4, gold=4 -> 6/8
    assert m["micro_f1"] == pytest.approx(0.75)


def test_au_f1_matches_sklearn():
    aus = ["AU1", "AU2"]
    y_true = [[a in g for a in aus] for g in GOLD]
    y_pred = [[a in p for a in aus] for p in PRED]
    m = au_metrics(PRED, GOLD, aus)
    assert m["mean_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro"))


def test_absent_au_scores_zero():
    assert per_au_f1([set()], [set()], ["AU9"]) == {"AU9": 0.0}


CLASSES = ["Anger", "Happiness", "Sadness"]
G = ["Anger", "Anger", "Happiness", "Sadness", "Sadness", "Sadness"]
P = ["Anger", "Sadness", "Happiness", "Sadness", None, "Anger"]


def test_emotion_metrics_hand_computed_and_sklearn():
    m = emotion_metrics(P, G, CLASSES)
    assert m["accuracy"] == pytest.approx(3 / 6)
    # recalls: Anger 1/2, Happiness 1/1, Sadness 1/3 -> UAR = (0.5+1+1/3)/3
    assert m["uar"] == pytest.approx((0.5 + 1 + 1 / 3) / 3)
    assert m["confusion"] == [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 1]]
    p_filled = [p or "none" for p in P]
    assert m["accuracy"] == pytest.approx(accuracy_score(G, p_filled))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(G, p_filled))
    assert m["macro_f1"] == pytest.approx(f1_score(G, p_filled, labels=CLASSES, average="macro"))


@pytest.mark.parametrize("pred, ref, expected", [
    ("the brows are lowered", "the brows are lowered", 1.0),
    ("a b c d", "a b x d", 0.75),       # LCS 3 of 4 -> P=R=.75
    ("", "something", 0.0),
])
def test_rouge_l(pred, ref, expected):
    assert rouge_l([pred], [ref]) == pytest.approx(expected)


def test_rege():
    assert rege(0.8, 0.3) == pytest.approx(110.0)
