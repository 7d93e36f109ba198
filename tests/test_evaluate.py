import pytest

from facial_r1.evaluate import PROTOCOLS, score
from facial_r1.errors import FacialR1Error
from facial_r1.facs import AU_SUBSETS

SAMPLES = [
    {"AUs": ["AU1", "AU12"], "labels": ["Happiness"], "description": "<think>x (AU1)</think><answer>Happiness</answer>"},
    {"AUs": ["AU4"], "labels": ["Contempt"], "description": ""},
    {"AUs": None, "labels": ["Sadness"], "description": ""},
]
COMPLETIONS = [
    "<think>inner brows up (AU1), smile (AU12)</think><answer>Happiness</answer>",  # all right
    "<think>brows down (AU4), nose wrinkled (AU9)</think><answer>Contempt</answer>",  # AU9 extra
    "<think>nothing</think><answer>Anger</answer>",                                 # wrong emotion
]


@pytest.mark.parametrize("protocol, au_subset, accuracy", [
    # DISFA's 8 AUs: AU1, AU4, AU12 right (F1 1), AU9 a false positive, the rest absent: 3/8; no emotion
    ("disfa", AU_SUBSETS["disfa"], None),
    ("bp4d", AU_SUBSETS["bp4d"], None),
    ("rafau", None, None),                # every AU of the table, no emotion
    # 7 classes without Contempt: sample 2 is not scored -> 1 right of 2
    ("fer2013", (), 0.5),
    ("affectnet7", (), 0.5),
    ("rafdb", (), 0.5),
    # 8 classes: 2 right of 3
    ("affectnet8", (), 2 / 3),
    ("fea", None, 2 / 3),
    ("faba", AU_SUBSETS["faba"], 2 / 3),
    ("synfacs", None, 2 / 3),
])
def test_each_protocol_scores_its_subset(protocol, au_subset, accuracy):
    m = score(SAMPLES, COMPLETIONS, protocol)
    subset, classes = PROTOCOLS[protocol]
    if au_subset == ():
        assert "au_f1" not in m and subset is None
    else:
        assert list(m["au"]["per_au"]) == list(au_subset or subset)
    if accuracy is None:
        assert "accuracy" not in m and classes is None
    else:
        assert m["accuracy"] == pytest.approx(accuracy)
    assert m["format_rate"] == 1.0


def test_disfa_mean_is_hand_computed():
    assert score(SAMPLES, COMPLETIONS, "disfa")["au_f1"] == pytest.approx(3 / 8)


def test_rouge_and_rege_use_samples_with_a_reference():
    m = score(SAMPLES, COMPLETIONS, "fea")
    assert 0 < m["rouge_l"] < 1 and m["rege"] == pytest.approx(100 * m["accuracy"] + 100 * m["rouge_l"])


def test_unknown_protocol():
    with pytest.raises(FacialR1Error, match="unknown protocol 'ck'"):
        score(SAMPLES, COMPLETIONS, "ck")
