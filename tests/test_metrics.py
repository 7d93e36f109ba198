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


def test_absent_au_scores_zero_but_is_left_out_of_the_mean():
    assert per_au_f1([set()], [set()], ["AU9"]) == {"AU9": 0.0}  # sklearn's zero_division=0
    m = au_metrics(PRED, GOLD, ["AU1", "AU2", "AU9", "AU26"])
    assert m["mean_f1"] == pytest.approx(0.75) and m["excluded_aus"] == ["AU9", "AU26"]


# Hand-made vectors: (pred, gold) per sample over a protocol subset with AUs that never occur.
VECTORS = [
    # AU1: tp 1 fp 1 fn 1 -> .5; AU2: tp 1 -> 1; AU4 predicted once but never true -> excluded
    ([{"AU1"}, {"AU2", "AU4"}, {"AU1"}, set()], [{"AU1"}, {"AU2"}, set(), {"AU1"}], ["AU1", "AU2", "AU4", "AU5"]),
    # nothing predicted: every present AU scores 0
    ([set(), set()], [{"AU12"}, {"AU6", "AU12"}], ["AU6", "AU12", "AU25"]),
    # one AU present, one never
    ([{"AU25"}, set(), {"AU25"}], [{"AU25"}, {"AU25"}, {"AU25"}], ["AU25", "AU26"]),
]


@pytest.mark.parametrize("pred, gold, aus", VECTORS)
def test_au_mean_is_the_released_formula_and_sklearn(pred, gold, aus):
    import numpy as np

    y_true = np.array([[a in g for a in aus] for g in gold], dtype=int)
    y_pred = np.array([[a in p for a in aus] for p in pred], dtype=int)
    each = f1_score(y_true, y_pred, average=None, zero_division=0)
    valid = y_true.sum(0) > 0  # released eval_emotion.py: f1_each[valid_mask].mean()
    m = au_metrics(pred, gold, aus)
    assert m["mean_f1"] == pytest.approx(each[valid].mean())
    assert m["per_au"] == pytest.approx({a: f for a, f, v in zip(aus, each, valid, strict=True) if v})
    assert m["excluded_aus"] == [a for a, v in zip(aus, valid, strict=True) if not v]


def test_first_vector_by_hand():
    m = au_metrics(*VECTORS[0])
    assert m["per_au"] == {"AU1": 0.5, "AU2": 1.0} and m["mean_f1"] == 0.75 and m["excluded_aus"] == ["AU4", "AU5"]


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


def test_macro_f1_counts_protocol_classes_without_support():
    # Fear is a protocol class nobody has or predicts: sklearn with labels= counts it as 0
    classes = CLASSES + ["Fear"]
    m = emotion_metrics(P, G, classes)
    p_filled = [p or "none" for p in P]
    assert m["macro_f1"] == pytest.approx(f1_score(G, p_filled, labels=classes, average="macro", zero_division=0))
    assert m["macro_f1"] == pytest.approx(emotion_metrics(P, G, CLASSES)["macro_f1"] * 3 / 4)


@pytest.mark.parametrize("pred, ref, expected", [
    ("the brows are lowered", "the brows are lowered", 1.0),
    ("a b c d", "a b x d", 0.75),       # LCS 3 of 4 -> P=R=.75
    ("", "something", 0.0),
])
def test_rouge_l(pred, ref, expected):
    assert rouge_l([pred], [ref]) == pytest.approx(expected)


@pytest.mark.parametrize("pred, ref, stemmed, unstemmed", [
    ("brows lowered", "brow lowering", 1.0, 0.0),        # Porter: brows->brow, lowered/lowering->lower
    # the tags' words are tokens: "think lips parted think" vs "lips parting"; LCS 2 of 4|2 stemmed,
    # 1 ("lips") unstemmed: F = 2/3 vs 1/3
    ("<think>lips parted</think>", "lips parting", 2 / 3, 1 / 3),
])
def test_rouge_l_stems_by_default(pred, ref, stemmed, unstemmed):
    assert rouge_l([pred], [ref]) == pytest.approx(stemmed)
    assert rouge_l([pred], [ref], stem=False) == pytest.approx(unstemmed)


def test_rege():
    assert rege(0.8, 0.3) == pytest.approx(110.0)
