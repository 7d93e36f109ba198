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
    ("L12", "AU12"),   # side prefix (RAF-AU, EMFACS)
    ("R14B", "AU14"),  # side and intensity letter
    ("12B", "AU12"),   # intensity letter
    ("au12", "AU12"),
    ("AU 12", "AU12"),
    ("AU8", "AU8"), ("AU19", "AU19"), ("AU21", "AU21"), ("AU29", "AU29"), ("AU31", "AU31"),
    ("AU33", "AU33"), ("AU37", "AU37"), ("AU44", "AU44"), ("AU46", "AU46"),  # codes the old table lacked
])
def test_normalize_au(raw, expected):
    assert facs.normalize_au(raw) == expected


@pytest.mark.parametrize("raw, kind", [
    ("AU3", "unknown"),    # never assigned in FACS
    ("AU40", "unknown"),
    ("AU47", "unknown"),   # beyond the main codes
    ("99", "unknown"),
    ("AU51", "head_eye"),  # head turn left: known, not scored
    ("62", "head_eye"),    # eyes turn right
    ("R12C", "au"),
])
def test_parse_au_code_kinds(raw, kind):
    assert facs.parse_au_code(raw).kind == kind


@pytest.mark.parametrize("raw", ["AU3", "AU99", "AU51", "brow", "", "AU1x", "AU0", "12Z", "X12", True, None, 1.5])
def test_not_a_scored_au_is_an_error_naming_it(raw):
    with pytest.raises(FacialR1Error, match="AU"):
        facs.normalize_au(raw)


@pytest.mark.parametrize("raw", ["brow", "", "AU1x", "AU0", "12Z", "X12", "AU 1 2", True, None, 1.5])
def test_malformed_code_is_an_error(raw):
    with pytest.raises(FacialR1Error, match="malformed AU code"):
        facs.parse_au_code(raw)


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
    # FACS 2002: AU1, AU2, AU4..AU39, AU41..AU46 (3 and 40 unassigned) = 44 action codes
    assert [au.number for au in facs.AU_TABLE.values()] == [1, 2, *range(4, 40), *range(41, 47)]
    assert all(au.name and au.look for au in facs.AU_TABLE.values())
    assert not set(facs.HEAD_EYE_CODES) & set(facs.AU_TABLE)
    assert facs.EMOTION_PROTOTYPES["Fear"] == ("AU1", "AU2", "AU4", "AU5", "AU7", "AU20", "AU26")
    assert facs.EMOTION_PROTOTYPES["Happiness"] == ("AU6", "AU12")
    assert all(au in facs.AU_TABLE for aus in facs.EMOTION_PROTOTYPES.values() for au in aus)
    assert len(facs.AU_SUBSETS["disfa"]) == 8 and len(facs.AU_SUBSETS["bp4d"]) == 12
    assert len(facs.AU_SUBSETS["faba"]) == 12
    assert facs.LABEL_ORDERS["fer2013"][0] == "Anger" and facs.LABEL_ORDERS["fer2013"][6] == "Neutral"
    assert facs.LABEL_ORDERS["affectnet"][0] == "Neutral" and facs.LABEL_ORDERS["affectnet"][7] == "Contempt"
    assert facs.LABEL_ORDERS["rafdb"][1] == "Surprise" and facs.LABEL_ORDERS["rafdb"][7] == "Neutral"


def test_prompt_glossary_is_the_released_list():
    # GRPO_PROMPT of RobitsG/Facial-R1, src/open-r1-multimodal/src/open_r1/prompts/emotion_prompt.py
    released = [1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 27, 28, 29,
                30, 31, 32, 43]
    assert facs.PROMPT_AUS == tuple(f"AU{n}" for n in released)
    from facial_r1.prompts import au_definitions
    assert [line.split()[0] for line in au_definitions().splitlines()] == list(facs.PROMPT_AUS)
