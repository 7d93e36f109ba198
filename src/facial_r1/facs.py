"""FACS knowledge: the Action Unit table, EMFACS emotion prototypes, the benchmarks'
AU subsets and each dataset's emotion label order, plus the normalisers every reader uses.

Everything here is plain data; `normalize_au` / `normalize_emotion` are the only ways
AU names and emotion labels enter the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from facial_r1.errors import FacialR1Error


@dataclass(frozen=True)
class ActionUnit:
    number: int
    name: str  # FACS name
    look: str  # one-line visual description, used in prompts and reasoning

    @property
    def code(self) -> str:
        return f"AU{self.number}"


# The 30 AUs (AU1..AU43) that the Facial-R1 analysis prompt defines.
AU_TABLE: dict[str, ActionUnit] = {
    au.code: au
    for au in [
        ActionUnit(1, "Inner Brow Raiser", "inner ends of the eyebrows pulled up"),
        ActionUnit(2, "Outer Brow Raiser", "outer ends of the eyebrows pulled up"),
        ActionUnit(4, "Brow Lowerer", "brows lowered and drawn together"),
        ActionUnit(5, "Upper Lid Raiser", "upper eyelids raised, eyes widened"),
        ActionUnit(6, "Cheek Raiser", "cheeks lifted, crow's feet at the eye corners"),
        ActionUnit(7, "Lid Tightener", "eyelids tensed and narrowed"),
        ActionUnit(9, "Nose Wrinkler", "skin of the nose wrinkled upwards"),
        ActionUnit(10, "Upper Lip Raiser", "upper lip raised"),
        ActionUnit(11, "Nasolabial Deepener", "nasolabial furrow deepened"),
        ActionUnit(12, "Lip Corner Puller", "lip corners pulled up and back"),
        ActionUnit(13, "Cheek Puffer", "cheeks sharply raised by the lip corners"),
        ActionUnit(14, "Dimpler", "lip corners tightened into dimples"),
        ActionUnit(15, "Lip Corner Depressor", "lip corners pulled down"),
        ActionUnit(16, "Lower Lip Depressor", "lower lip pulled down"),
        ActionUnit(17, "Chin Raiser", "chin boss pushed up"),
        ActionUnit(18, "Lip Pucker", "lips pushed forward into a pucker"),
        ActionUnit(20, "Lip Stretcher", "lips stretched sideways"),
        ActionUnit(22, "Lip Funneler", "lips funnelled outwards"),
        ActionUnit(23, "Lip Tightener", "lips tightened and narrowed"),
        ActionUnit(24, "Lip Pressor", "lips pressed together"),
        ActionUnit(25, "Lips Part", "lips parted"),
        ActionUnit(26, "Jaw Drop", "jaw dropped, mouth open"),
        ActionUnit(27, "Mouth Stretch", "mouth stretched wide open"),
        ActionUnit(28, "Lip Suck", "lips sucked in"),
        ActionUnit(32, "Lip Bite", "lip bitten"),
        ActionUnit(38, "Nostril Dilator", "nostrils widened"),
        ActionUnit(39, "Nostril Compressor", "nostrils narrowed"),
        ActionUnit(41, "Lid Droop", "upper eyelids drooping"),
        ActionUnit(42, "Slit", "eyes narrowed to a slit"),
        ActionUnit(43, "Eyes Closed", "eyes closed"),
    ]
}

EMOTIONS: tuple[str, ...] = (
    "Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise",
)

# EMFACS-7 prototypes (Friesen & Ekman, 1983, EMFACS-7; as tabulated in
# Ekman, Friesen & Hager, "FACS Investigator's Guide", 2002). Contempt is unilateral 12+14.
EMOTION_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "Happiness": ("AU6", "AU12"),
    "Sadness": ("AU1", "AU4", "AU15"),
    "Surprise": ("AU1", "AU2", "AU5", "AU26"),
    "Fear": ("AU1", "AU2", "AU4", "AU5", "AU7", "AU20", "AU26"),
    "Anger": ("AU4", "AU5", "AU7", "AU23"),
    "Disgust": ("AU9", "AU15", "AU16"),
    "Contempt": ("AU12", "AU14"),
    "Neutral": (),
}
UNILATERAL = {"Contempt"}

# Benchmark AU subsets used for reporting mean F1.
AU_SUBSETS: dict[str, tuple[str, ...]] = {
    "disfa": ("AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26"),
    "bp4d": ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU14", "AU15", "AU17",
             "AU23", "AU24"),
    "faba": ("AU1", "AU2", "AU4", "AU5", "AU6", "AU10", "AU12", "AU17", "AU24", "AU25",
             "AU26", "AU43"),
}

# Integer label -> canonical emotion, in each dataset's published order.
LABEL_ORDERS: dict[str, dict[int, str]] = {
    "fer2013": {0: "Anger", 1: "Disgust", 2: "Fear", 3: "Happiness", 4: "Sadness",
                5: "Surprise", 6: "Neutral"},
    "affectnet": {0: "Neutral", 1: "Happiness", 2: "Sadness", 3: "Surprise", 4: "Fear",
                  5: "Disgust", 6: "Anger", 7: "Contempt"},
    "rafdb": {1: "Surprise", 2: "Fear", 3: "Disgust", 4: "Happiness", 5: "Sadness",
              6: "Anger", 7: "Neutral"},
}

_EMOTION_ALIASES = {
    "anger": "Anger", "angry": "Anger", "mad": "Anger",
    "contempt": "Contempt", "contemptuous": "Contempt",
    "disgust": "Disgust", "disgusted": "Disgust",
    "fear": "Fear", "fearful": "Fear", "afraid": "Fear", "scared": "Fear",
    "happiness": "Happiness", "happy": "Happiness", "joy": "Happiness", "joyful": "Happiness",
    "neutral": "Neutral", "calm": "Neutral",
    "sadness": "Sadness", "sad": "Sadness", "sorrow": "Sadness",
    "surprise": "Surprise", "surprised": "Surprise",
}

_AU_RE = re.compile(r"^\s*(?:au)?\s*0*(\d{1,3})\s*$", re.IGNORECASE)


def normalize_au(name: object) -> str:
    """Canonical AU code: 'au01', 'AU 1', '1', 1 -> 'AU1'. Unknown AUs raise.

    >>> normalize_au("au01"), normalize_au("AU 12"), normalize_au(4)
    ('AU1', 'AU12', 'AU4')
    """
    au = try_normalize_au(name)
    if au is None:
        raise FacialR1Error(f"unknown AU {name!r} (known: AU1..AU43 of the FACS table)")
    return au


def try_normalize_au(name: object) -> str | None:
    """Like `normalize_au` but returns None for anything that is not a known AU."""
    if isinstance(name, bool):
        return None
    m = _AU_RE.match(str(name))
    if not m:
        return None
    code = f"AU{int(m.group(1))}"
    return code if code in AU_TABLE else None


def normalize_emotion(label: object) -> str:
    """Canonical emotion name: 'happy', 'Joy' -> 'Happiness'. Unknown labels raise."""
    emotion = try_normalize_emotion(label)
    if emotion is None:
        raise FacialR1Error(f"unknown emotion label {label!r} (allowed: {', '.join(EMOTIONS)})")
    return emotion


def try_normalize_emotion(label: object) -> str | None:
    if not isinstance(label, str):
        return None
    return _EMOTION_ALIASES.get(label.strip().strip(".!").lower())


def au_sort_key(au: str) -> int:
    return int(au[2:])


def sort_aus(aus) -> list[str]:
    return sorted(set(aus), key=au_sort_key)
