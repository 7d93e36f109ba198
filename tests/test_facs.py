import pytest

from facial_r1 import facs
from facial_r1.errors import FacialR1Error


@pytest.mark.parametrize("raw, expected", [
    ("au01", "AU1"),   # lower case, zero padded
    ("AU 1", "AU1"),   # space
    ("1", "AU1"),      # bare number
    ("AU01", "AU1"),
    (12, "AU12"),      # int
    ("AU43", "AU43"),
])
def test_normalize_au(raw, expected):
    assert facs.normalize_au(raw) == expected


@pytest.mark.parametrize("raw", ["AU3", "AU99", "brow", "", "AU1x", True])
def test_unknown_au_is_an_error_naming_it(raw):
    with pytest.raises(FacialR1Error, match="unknown AU"):
        facs.normalize_au(raw)


@pytest.mark.parametrize("raw, expected", [
    ("happy", "Happiness"), ("Happy", "Happiness"), ("joy", "Happiness"), ("angry", "Anger"),
    ("Sad", "Sadness"), ("surprised", "Surprise"), ("fearful", "Fear"), ("Neutral", "Neutral"),
    ("disgusted", "Disgust"), ("contempt", "Contempt"), (" Anger. ", "Anger"),
])
def test_normalize_emotion(raw, expected):
    assert facs.normalize_emotion(raw) == expected


def test_unknown_emotion_is_an_error():
    with pytest.raises(FacialR1Error, match="'bored'"):
        facs.normalize_emotion("bored")


def test_tables():
    assert len(facs.AU_TABLE) == 30
    assert all(1 <= au.number <= 43 and au.name and au.look for au in facs.AU_TABLE.values())
    assert facs.EMOTION_PROTOTYPES["Fear"] == ("AU1", "AU2", "AU4", "AU5", "AU7", "AU20", "AU26")
    assert facs.EMOTION_PROTOTYPES["Happiness"] == ("AU6", "AU12")
    assert all(au in facs.AU_TABLE for aus in facs.EMOTION_PROTOTYPES.values() for au in aus)
    assert len(facs.AU_SUBSETS["disfa"]) == 8 and len(facs.AU_SUBSETS["bp4d"]) == 12
    assert len(facs.AU_SUBSETS["faba"]) == 12
    assert facs.LABEL_ORDERS["fer2013"][0] == "Anger" and facs.LABEL_ORDERS["fer2013"][6] == "Neutral"
    assert facs.LABEL_ORDERS["affectnet"][0] == "Neutral" and facs.LABEL_ORDERS["affectnet"][7] == "Contempt"
    assert facs.LABEL_ORDERS["rafdb"][1] == "Surprise" and facs.LABEL_ORDERS["rafdb"][7] == "Neutral"
