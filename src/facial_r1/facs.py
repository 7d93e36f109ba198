"""FACS knowledge in one place: the Action Unit table (every code of the FACS manual), the EMFACS
emotion prototypes, the benchmarks' AU subsets, each dataset's emotion label order, the
normalisers every reader uses.

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


# Every action code of the FACS manual (Ekman, Friesen & Hager 2002): the main codes AU1..AU46
# (3 and 40 were never assigned). Names follow the 2002 manual; AU13 was "Cheek Puffer" in the
# 1978 edition and in Facial-R1's released prompt.
AU_TABLE: dict[str, ActionUnit] = {
    au.code: au
    for au in [
        ActionUnit(1, "Inner Brow Raiser", "inner ends of the eyebrows pulled up"),
        ActionUnit(2, "Outer Brow Raiser", "outer ends of the eyebrows pulled up"),
        ActionUnit(4, "Brow Lowerer", "brows lowered and drawn together"),
        ActionUnit(5, "Upper Lid Raiser", "upper eyelids raised, eyes widened"),
        ActionUnit(6, "Cheek Raiser", "cheeks lifted, crow's feet at the eye corners"),
        ActionUnit(7, "Lid Tightener", "eyelids tensed and narrowed"),
        ActionUnit(8, "Lips Toward Each Other", "lips drawn toward each other"),
        ActionUnit(9, "Nose Wrinkler", "skin of the nose wrinkled upwards"),
        ActionUnit(10, "Upper Lip Raiser", "upper lip raised"),
        ActionUnit(11, "Nasolabial Deepener", "nasolabial furrow deepened"),
        ActionUnit(12, "Lip Corner Puller", "lip corners pulled up and back"),
        ActionUnit(13, "Sharp Lip Puller", "cheeks puffed up by sharply pulled lip corners"),
        ActionUnit(14, "Dimpler", "lip corners tightened into dimples"),
        ActionUnit(15, "Lip Corner Depressor", "lip corners pulled down"),
        ActionUnit(16, "Lower Lip Depressor", "lower lip pulled down"),
        ActionUnit(17, "Chin Raiser", "chin boss pushed up"),
        ActionUnit(18, "Lip Pucker", "lips pushed forward into a pucker"),
        ActionUnit(19, "Tongue Show", "tongue shown"),
        ActionUnit(20, "Lip Stretcher", "lips stretched sideways"),
        ActionUnit(21, "Neck Tightener", "neck muscles tightened"),
        ActionUnit(22, "Lip Funneler", "lips funnelled outwards"),
        ActionUnit(23, "Lip Tightener", "lips tightened and narrowed"),
        ActionUnit(24, "Lip Pressor", "lips pressed together"),
        ActionUnit(25, "Lips Part", "lips parted"),
        ActionUnit(26, "Jaw Drop", "jaw dropped, mouth open"),
        ActionUnit(27, "Mouth Stretch", "mouth stretched wide open"),
        ActionUnit(28, "Lip Suck", "lips sucked in"),
        ActionUnit(29, "Jaw Thrust", "jaw pushed forward"),
        ActionUnit(30, "Jaw Sideways", "jaw moved to one side"),
        ActionUnit(31, "Jaw Clencher", "jaw clenched"),
        ActionUnit(32, "Lip Bite", "lip bitten"),
        ActionUnit(33, "Cheek Blow", "cheeks blown out"),
        ActionUnit(34, "Cheek Puff", "cheeks puffed"),
        ActionUnit(35, "Cheek Suck", "cheeks sucked in"),
        ActionUnit(36, "Tongue Bulge", "tongue bulging a cheek or lip"),
        ActionUnit(37, "Lip Wipe", "tongue wiping the lips"),
        ActionUnit(38, "Nostril Dilator", "nostrils widened"),
        ActionUnit(39, "Nostril Compressor", "nostrils narrowed"),
        ActionUnit(41, "Lid Droop", "upper eyelids drooping"),
        ActionUnit(42, "Slit", "eyes narrowed to a slit"),
        ActionUnit(43, "Eyes Closed", "eyes closed"),
        ActionUnit(44, "Squint", "eyes squinted"),
        ActionUnit(45, "Blink", "eyes blinking"),
        ActionUnit(46, "Wink", "one eye winking"),
    ]
}

# Head and eye position codes of the manual: known, never scored (a row keeps them out of `AUs`).
HEAD_EYE_CODES: dict[str, str] = {
    "AU51": "Head Turn Left", "AU52": "Head Turn Right", "AU53": "Head Up", "AU54": "Head Down",
    "AU55": "Head Tilt Left", "AU56": "Head Tilt Right", "AU57": "Head Forward", "AU58": "Head Back",
    "AU61": "Eyes Turn Left", "AU62": "Eyes Turn Right", "AU63": "Eyes Up", "AU64": "Eyes Down",
    "AU65": "Walleye", "AU66": "Cross-eye",
}

# The AU glossary of Facial-R1's released analysis prompt (GRPO_PROMPT in
# RobitsG/Facial-R1 src/open-r1-multimodal/src/open_r1/prompts/emotion_prompt.py), in its order.
PROMPT_AUS: tuple[str, ...] = tuple(f"AU{n}" for n in (
    1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    32, 43))

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

# Benchmark AU subsets for per-AU F1 (the mean is taken over those with gold positives):
# DISFA's 8 and BP4D's 12 as in the AU-detection literature (e.g. JAA-Net, ME-GraphAU);
# FABA-Bench's 12. RAF-AU and FEA-20K score every FACS AU, as Facial-R1's released eval does.
AU_SUBSETS: dict[str, tuple[str, ...]] = {
    "disfa": ("AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26"),
    "bp4d": ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU14", "AU15", "AU17",
             "AU23", "AU24"),
    "faba": ("AU1", "AU2", "AU4", "AU5", "AU6", "AU10", "AU12", "AU17", "AU24", "AU25",
             "AU26", "AU43"),
    "all": tuple(AU_TABLE),
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

# One AU code as datasets write it: an optional "AU" (any case, optional space), an optional side
# L/R (or U, unilateral), the number, an optional intensity letter A-E: 12, AU12, au 12, L12, R14B, 12B.
_AU_CODE = re.compile(r"^\s*(?:au\s?)?([LRU])?\s?0*(\d{1,3})([A-E])?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class AUCode:
    code: str  # "AU12" (side and intensity dropped)
    kind: str  # "au" (scored), "head_eye" (known, not scored) or "unknown" (well formed, not in FACS)
    side: str | None = None  # "L", "R", "U"
    intensity: str | None = None  # "A".."E"


def parse_au_code(raw: object) -> AUCode:
    """Read one AU code; a malformed one raises (the caller adds FILE:LINE).

    >>> parse_au_code("R14B")
    AUCode(code='AU14', kind='au', side='R', intensity='B')
    >>> parse_au_code("AU3").kind, parse_au_code("62").kind
    ('unknown', 'head_eye')
    """
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise FacialR1Error(f"malformed AU code {raw!r}")
    m = _AU_CODE.match(str(raw))
    if not m or int(m.group(2)) == 0:
        raise FacialR1Error(f"malformed AU code {raw!r} (expected forms like 12, AU12, L12, R14B)")
    code = f"AU{int(m.group(2))}"
    kind = "au" if code in AU_TABLE else "head_eye" if code in HEAD_EYE_CODES else "unknown"
    side = m.group(1).upper() if m.group(1) else None
    return AUCode(code, kind, side, m.group(3).upper() if m.group(3) else None)


def normalize_au(name: object) -> str:
    """Canonical code of a scored FACS AU: 'au01', 'AU 1', 'L12', '14B', 1 -> 'AU1' ... Anything
    else (head/eye codes, codes the manual lacks, malformed text) raises.

    >>> normalize_au("au01"), normalize_au("AU 12"), normalize_au(4), normalize_au("R14B")
    ('AU1', 'AU12', 'AU4', 'AU14')
    """
    au = try_normalize_au(name)
    if au is None:
        raise FacialR1Error(f"unknown AU {name!r} (known: the FACS action units AU1..AU46)")
    return au


def try_normalize_au(name: object) -> str | None:
    """Like `normalize_au` but returns None for anything that is not a scored FACS AU."""
    try:
        parsed = parse_au_code(name)
    except FacialR1Error:
        return None
    return parsed.code if parsed.kind == "au" else None


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
