"""SynFACS: cartoon faces rendered from Action Unit intensities, so their AUs are known by
construction. The embedded default data set of the project (no download, no licence).

    facial-r1 data synth-faces --out data/synfacs --n 3000 --seed 0 --preview

Each sample draws one of the 8 emotions, samples AU intensities from its EMFACS prototype
(an AU sometimes missing, an occasional extra AU, varied intensity), draws an identity
(face shape, skin, eyes, brows, hair, background) and a pose (rotation, scale, shift),
renders with lighting and noise, and writes AU-grounded reasoning from the true AUs.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facial_r1.data.schema import write_jsonl
from facial_r1.facs import AU_TABLE, EMOTION_PROTOTYPES, EMOTIONS, UNILATERAL, sort_aus
from facial_r1.prompts import DEFAULT_QUESTION

log = logging.getLogger(__name__)

# The AUs the renderer moves; each changes the face visibly and distinctly.
RENDERED_AUS = ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14",
                "AU15", "AU16", "AU17", "AU20", "AU23", "AU25", "AU26")
VISIBLE = 0.25  # an AU is listed when its intensity reaches this
P_KEEP = 0.85  # chance a prototype AU is present
P_EXTRA = 0.15  # chance of one extra AU outside the prototype
# Extra AUs that do not contradict the prototype's own movements.
_CONFLICTS = {"AU12": {"AU15", "AU20"}, "AU15": {"AU12", "AU14"}, "AU5": {"AU7"}, "AU7": {"AU5"},
              "AU14": {"AU15"}, "AU20": {"AU12"}, "AU23": {"AU25", "AU26"}}
SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 131), (198, 134, 96), (141, 85, 54), (96, 60, 40)]
HAIR = [(30, 22, 18), (70, 45, 25), (120, 80, 40), (200, 170, 90), (150, 60, 30), (130, 130, 130)]


@dataclass(frozen=True)
class Identity:
    face_w: float  # half-width of the head, in canvas units (canvas = 1.0)
    face_h: float
    skin: tuple[int, int, int]
    eye_gap: float  # half the distance between the eye centres
    eye_w: float
    brow_thick: float
    brow_color: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: int  # 0 short, 1 long, 2 bald
    iris: tuple[int, int, int]
    mouth_w: float
    background: tuple[int, int, int]


@dataclass(frozen=True)
class Pose:
    angle: float  # degrees
    scale: float
    dx: float
    dy: float
    light: float  # brightness factor
    light_dir: float  # left-right lighting gradient strength
    noise: float  # pixel noise sigma


def sample_identity(rng: random.Random) -> Identity:
    skin = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in rng.choice(SKIN))
    bg = tuple(rng.randint(40, 230) for _ in range(3))
    return Identity(
        face_w=rng.uniform(0.27, 0.33), face_h=rng.uniform(0.36, 0.41), skin=skin,
        eye_gap=rng.uniform(0.10, 0.13), eye_w=rng.uniform(0.048, 0.062),
        brow_thick=rng.uniform(0.012, 0.026), brow_color=rng.choice(HAIR[:4]), hair=rng.choice(HAIR),
        hair_style=rng.choice([0, 0, 1, 1, 2]), iris=rng.choice([(60, 40, 20), (40, 90, 140), (60, 110, 60)]),
        mouth_w=rng.uniform(0.08, 0.105), background=bg,
    )


def sample_pose(rng: random.Random) -> Pose:
    return Pose(angle=rng.uniform(-8, 8), scale=rng.uniform(0.9, 1.08), dx=rng.uniform(-0.04, 0.04),
                dy=rng.uniform(-0.04, 0.04), light=rng.uniform(0.8, 1.15), light_dir=rng.uniform(-0.2, 0.2),
                noise=rng.uniform(0, 6))


def sample_aus(emotion: str, rng: random.Random) -> tuple[dict[str, float], bool]:
    """AU intensities in [0, 1] for one face of `emotion`, and whether it is one-sided."""
    intensity: dict[str, float] = {}
    for au in EMOTION_PROTOTYPES[emotion]:
        if rng.random() < P_KEEP:
            intensity[au] = rng.uniform(0.45, 1.0)
    if emotion == "Happiness" and rng.random() < 0.4:
        intensity["AU25"] = rng.uniform(0.4, 0.9)  # open-mouthed smile
    if rng.random() < P_EXTRA or (emotion != "Neutral" and not intensity):
        blocked = set().union(*(_CONFLICTS.get(a, set()) for a in intensity)) | set(intensity)
        choices = [a for a in RENDERED_AUS if a not in blocked]
        extra = rng.choice(choices)
        if not (blocked & _CONFLICTS.get(extra, set())):
            intensity[extra] = rng.uniform(0.3, 0.7)
    if "AU26" in intensity:  # a dropped jaw parts the lips
        intensity["AU25"] = max(intensity.get("AU25", 0.0), intensity["AU26"])
    return intensity, emotion in UNILATERAL


def visible_aus(intensity: dict[str, float]) -> list[str]:
    return sort_aus(au for au, v in intensity.items() if v >= VISIBLE)


def render_face(intensity: dict[str, float], ident: Identity, pose: Pose, size: int = 112,
                unilateral: bool = False, noise_seed: int = 0) -> Image.Image:
    """Draw one face. Geometry is laid out on a unit canvas, posed, then drawn at 2x and reduced."""
    s = size * 2
    a = {au: intensity.get(au, 0.0) for au in RENDERED_AUS}
    cos, sin = math.cos(math.radians(pose.angle)), math.sin(math.radians(pose.angle))

    def P(x: float, y: float) -> tuple[float, float]:  # unit canvas -> posed pixel coordinates
        x, y = (x - 0.5) * pose.scale, (y - 0.52) * pose.scale
        return ((0.5 + pose.dx + x * cos - y * sin) * s, (0.52 + pose.dy + x * sin + y * cos) * s)

    def ellipse(cx, cy, rx, ry, n=28):
        return [P(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(0, 2 * math.pi, n, endpoint=False)]

    def curve(p0, p1, p2, n=9):  # quadratic Bezier through control point p1
        return [P((1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t * t * p2[0],
                  (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t * t * p2[1]) for t in np.linspace(0, 1, n)]

    im = Image.new("RGB", (s, s), ident.background)
    d = ImageDraw.Draw(im)
    fw, fh, cx, cy = ident.face_w, ident.face_h, 0.5, 0.52
    jaw = 0.05 * a["AU26"]  # the chin drops with the jaw
    dark = tuple(int(c * 0.55) for c in ident.skin)
    line_w = max(1, int(0.008 * s))

    if ident.hair_style == 1:
        d.polygon(ellipse(cx, cy - 0.02, fw + 0.05, fh + 0.06), fill=ident.hair)
    d.polygon(ellipse(cx - fw, cy + 0.0, 0.035, 0.06), fill=ident.skin)  # ears
    d.polygon(ellipse(cx + fw, cy + 0.0, 0.035, 0.06), fill=ident.skin)
    head = [P(cx + fw * math.cos(t), cy + (fh + (jaw if math.sin(t) > 0 else 0)) * math.sin(t))
            for t in np.linspace(0, 2 * math.pi, 36, endpoint=False)]
    d.polygon(head, fill=ident.skin)
    if ident.hair_style != 2:
        top = [P(cx + (fw + 0.01) * math.cos(t), cy - 0.02 + (fh + 0.02) * math.sin(t))
               for t in np.linspace(math.pi * 1.05, math.pi * 1.95, 16)]
        d.polygon(top + [P(cx + fw * 0.7, cy - fh * 0.62), P(cx - fw * 0.7, cy - fh * 0.62)], fill=ident.hair)

    eye_y = cy - 0.06
    brow_y = eye_y - 0.075
    for side in (-1, 1):
        ex = cx + side * ident.eye_gap
        # Eyes: AU5 widens, AU7 narrows (lower lid rises), AU6 pushes the lower lid up.
        upper = 0.028 * (1 + 0.9 * a["AU5"] - 0.45 * a["AU7"])
        lower = 0.022 * (1 - 0.5 * a["AU7"] - 0.45 * a["AU6"] + 0.3 * a["AU5"])
        ew = ident.eye_w
        lid = [P(ex + ew * math.cos(t), eye_y + upper * math.sin(t)) for t in np.linspace(math.pi, 2 * math.pi, 12)]
        low = [P(ex + ew * math.cos(t), eye_y + lower * math.sin(t)) for t in np.linspace(0, math.pi, 12)]
        d.polygon(lid + low, fill=(250, 250, 250))
        r = min(0.02, (upper + lower) * 0.55)
        iris_y = eye_y + (lower - upper) * 0.15
        d.polygon(ellipse(ex, iris_y, r, min(r, (upper + lower) / 2)), fill=ident.iris)
        d.polygon(ellipse(ex, iris_y, r * 0.45, min(r, (upper + lower) / 2) * 0.45, 12), fill=(15, 15, 15))
        d.line(lid, fill=(40, 30, 30), width=line_w + 1)
        if a["AU6"] >= VISIBLE or a["AU7"] >= VISIBLE:  # tension lines under / beside the eye
            d.line(curve((ex - ew, eye_y + lower + 0.012), (ex, eye_y + lower + 0.03), (ex + ew, eye_y + lower + 0.012)),
                   fill=dark, width=line_w)
        if a["AU6"] >= VISIBLE:  # crow's feet
            ox = ex + side * (ew + 0.012)
            for k in (-1, 0, 1):
                d.line([P(ox, eye_y + k * 0.012), P(ox + side * 0.03, eye_y + k * 0.022)], fill=dark, width=line_w)
        # Brows: AU1 lifts the inner end, AU2 the outer end, AU4 lowers and draws them together.
        inner_x = cx + side * (ident.eye_gap - ident.eye_w * 0.9 - 0.01 * a["AU4"])
        outer_x = cx + side * (ident.eye_gap + ident.eye_w * 1.1)
        base = brow_y + 0.025 * a["AU4"]
        inner = (inner_x, base - 0.045 * a["AU1"] + 0.012 * a["AU4"])
        outer = (outer_x, base - 0.04 * a["AU2"] + 0.004)
        mid = ((inner[0] + outer[0]) / 2, min(inner[1], outer[1]) - 0.012 - 0.012 * a["AU2"])
        d.line(curve(inner, mid, outer), fill=ident.brow_color, width=max(2, int(ident.brow_thick * s)))
    if a["AU4"] >= VISIBLE:  # vertical furrows between the brows
        for k in (-1, 1):
            d.line([P(cx + k * 0.012, brow_y - 0.005), P(cx + k * 0.01, brow_y + 0.035)], fill=dark, width=line_w)
    if a["AU1"] >= VISIBLE or a["AU2"] >= VISIBLE:  # forehead lines
        for k in range(2):
            yy = brow_y - 0.07 - 0.022 * k
            d.line(curve((cx - 0.09, yy), (cx, yy - 0.01 - 0.01 * a["AU1"]), (cx + 0.09, yy)), fill=dark, width=line_w)

    # Nose: AU9 wrinkles the bridge and lifts the nostrils; AU10 lifts them a little too.
    nose_y = cy + 0.07 - 0.012 * a["AU9"] - 0.006 * a["AU10"]
    d.line([P(cx, eye_y + 0.01), P(cx - 0.012, nose_y), P(cx + 0.015, nose_y)], fill=dark, width=line_w)
    for side in (-1, 1):
        d.polygon(ellipse(cx + side * 0.022, nose_y, 0.01 + 0.004 * a["AU9"], 0.006, 10), fill=dark)
    if a["AU9"] >= VISIBLE:
        for k in range(3):
            yy = eye_y + 0.02 + 0.014 * k
            d.line([P(cx - 0.025, yy), P(cx + 0.025, yy - 0.004)], fill=dark, width=line_w)
    if a["AU9"] >= VISIBLE or a["AU10"] >= VISIBLE or a["AU6"] >= VISIBLE:  # nasolabial folds
        deep = 0.02 * max(a["AU9"], a["AU10"], a["AU6"])
        for side in (-1, 1):
            d.line(curve((cx + side * 0.035, nose_y - 0.005), (cx + side * (0.07 + deep), nose_y + 0.03),
                         (cx + side * (0.075 + deep), nose_y + 0.07)), fill=dark, width=line_w)

    # Mouth: corners (AU12 up/out, AU15 down, AU20 out, AU14 dimple, AU23 narrow), lips
    # (AU10 upper up, AU16 lower down, AU17 lower up + chin), opening (AU25, AU26).
    my = cy + 0.17
    open_gap = 0.012 * a["AU25"] + 0.05 * a["AU26"] + 0.012 * a["AU16"] + 0.008 * a["AU10"]
    lip = 0.014 * (1 - 0.6 * a["AU23"])
    corners = {}
    for side in (-1, 1):
        one = 1.0 if not unilateral or side == 1 else 0.0
        w = ident.mouth_w * (1 + 0.25 * a["AU12"] * one + 0.4 * a["AU20"] - 0.2 * a["AU23"] - 0.08 * a["AU14"] * one)
        up = 0.055 * a["AU12"] * one + 0.012 * a["AU14"] * one - 0.04 * a["AU15"] + 0.008 * a["AU17"]
        corners[side] = (cx + side * w, my - up + open_gap * 0.3)
    left, right = corners[-1], corners[1]
    mid_x = (left[0] + right[0]) / 2
    smile = 0.5 * ((my - left[1]) + (my - right[1]))  # corners above centre -> lips curve up
    upper_in = my - 0.3 * open_gap - 0.01 * a["AU10"] + 0.25 * smile
    lower_in = my + open_gap - 0.004 * a["AU17"] + 0.8 * smile
    upper_out = upper_in - lip - 0.004 * a["AU10"]
    lower_out = lower_in + lip * 1.2 + 0.01 * a["AU16"] - 0.006 * a["AU17"]
    outer = curve(left, (mid_x, 2 * upper_out - (left[1] + right[1]) / 2), right) + \
        curve(right, (mid_x, 2 * lower_out - (left[1] + right[1]) / 2), left)[1:]
    d.polygon(outer, fill=(170, 70, 70))
    if open_gap > 0.004:
        inner = curve(left, (mid_x, 2 * upper_in - (left[1] + right[1]) / 2), right) + \
            curve(right, (mid_x, 2 * lower_in - (left[1] + right[1]) / 2), left)[1:]
        d.polygon(inner, fill=(50, 15, 20))
        if a["AU10"] >= VISIBLE or a["AU16"] >= VISIBLE or a["AU12"] >= 0.5:  # teeth show
            teeth = curve(left, (mid_x, 2 * (upper_in + 0.006) - (left[1] + right[1]) / 2), right)
            d.line(teeth, fill=(240, 240, 235), width=max(2, int(0.012 * s)))
    else:
        d.line(curve(left, (mid_x, 2 * upper_in - (left[1] + right[1]) / 2), right), fill=(90, 30, 35), width=line_w)
    for side in (-1, 1):
        if a["AU14"] >= VISIBLE and (not unilateral or side == 1):  # dimple
            c = corners[side]
            d.line(curve((c[0] + side * 0.008, c[1] - 0.012), (c[0] + side * 0.02, c[1]), (c[0] + side * 0.008, c[1] + 0.014)),
                   fill=dark, width=line_w)
    if a["AU17"] >= VISIBLE:  # chin boss wrinkles
        cy2 = my + 0.085 + jaw
        d.line(curve((cx - 0.035, cy2), (cx, cy2 - 0.02 * a["AU17"]), (cx + 0.035, cy2)), fill=dark, width=line_w)
    if a["AU20"] >= VISIBLE:  # stretched lips pull the neck-side skin: short lines at the corners
        for side in (-1, 1):
            c = corners[side]
            d.line([P(c[0] + side * 0.01, c[1]), P(c[0] + side * 0.03, c[1] + 0.012)], fill=dark, width=line_w)

    im = im.reduce(2)
    return _light_and_noise(im, pose, noise_seed)


def _light_and_noise(im: Image.Image, pose: Pose, seed: int) -> Image.Image:
    x = np.asarray(im, dtype=np.float32)
    gradient = 1 + pose.light_dir * np.linspace(-1, 1, x.shape[1], dtype=np.float32)
    x = x * (pose.light * gradient)[None, :, None]
    if pose.noise > 0:
        x += np.random.default_rng(seed).normal(0, pose.noise, x.shape).astype(np.float32)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


# ---- reasoning text -------------------------------------------------------------------

AU_PHRASES: dict[str, tuple[str, ...]] = {
    "AU1": ("the inner ends of the brows are raised", "the inner brows lift", "the inner corners of the eyebrows go up"),
    "AU2": ("the outer brows are raised", "the outer ends of the eyebrows lift", "the brows arch up at the sides"),
    "AU4": ("the brows are pulled together and lowered", "brows drawn down and together", "a frown gathers between the brows"),
    "AU5": ("the upper eyelids are raised", "the eyes are opened wide", "the upper lids lift, showing more of the eye"),
    "AU6": ("the cheeks are raised", "the cheeks lift and crinkle the eye corners", "crow's feet show as the cheeks rise"),
    "AU7": ("the eyelids are tightened", "the lids narrow with tension", "the eyes are tensed and narrowed"),
    "AU9": ("the nose is wrinkled", "the skin of the nose bunches up", "the nose wrinkles upward"),
    "AU10": ("the upper lip is raised", "the upper lip lifts", "the upper lip is drawn up"),
    "AU12": ("the lip corners are pulled up", "the mouth corners rise", "the lip corners are drawn up and back"),
    "AU14": ("the lip corners are tightened into dimples", "dimples form at the mouth corners", "the mouth corners tighten"),
    "AU15": ("the lip corners are pulled down", "the mouth corners turn down", "the corners of the lips are depressed"),
    "AU16": ("the lower lip is pulled down", "the lower lip is depressed", "the lower lip drops"),
    "AU17": ("the chin is pushed up", "the chin boss rises", "the chin is raised, pushing the lower lip up"),
    "AU20": ("the lips are stretched sideways", "the mouth is stretched horizontally", "the lips pull out to the sides"),
    "AU23": ("the lips are tightened", "the lips narrow and tense", "the lips are pressed thin"),
    "AU25": ("the lips are parted", "the lips part", "the mouth is slightly open"),
    "AU26": ("the jaw drops", "the jaw is lowered", "the mouth falls open as the jaw drops"),
}
_OPENERS = ("Looking at the face, ", "In this face, ", "Observing the expression, ", "Here ", "On this face ")
_CLOSERS = ("These movements indicate {e}.", "Together they point to {e}.", "This pattern matches {e}.",
            "The combination suggests {e}.")
_NEUTRAL = ("The face is relaxed, with no clear muscle movement.", "The features rest in a neutral position.",
            "No action unit is clearly active; the face is calm.")
_NOUN = {"Anger": "anger", "Contempt": "contempt", "Disgust": "disgust", "Fear": "fear",
         "Happiness": "happiness", "Neutral": "a neutral state", "Sadness": "sadness", "Surprise": "surprise"}


def describe(aus: list[str], emotion: str, rng: random.Random, unilateral: bool = False,
             closer: str | None = None) -> str:
    """AU-grounded reasoning citing exactly `aus` (each once), then the emotion; `closer` replaces
    the closing sentence."""
    clauses = []
    for au in aus:
        text = rng.choice(AU_PHRASES.get(au, (AU_TABLE[au].look,)))
        if unilateral and au in ("AU12", "AU14"):
            text += " on one side only"
        clauses.append(f"{text} ({au})")
    if not clauses:
        body = rng.choice(_NEUTRAL)
    else:
        joined = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
        body = rng.choice(_OPENERS) + joined + ". " + (closer or rng.choice(_CLOSERS).format(e=_NOUN[emotion]))
    return f"<think>{body}</think><answer>{emotion}</answer>"


def text_corpus(n: int = 3000, seed: int = 0) -> Iterator[str]:
    """Text the tiny tokenizer is trained on: FACS definitions, prompts, sample reasoning."""
    from facial_r1.prompts import analysis_prompt, au_definitions, guided_prompt

    yield au_definitions()
    yield analysis_prompt()
    yield guided_prompt(DEFAULT_QUESTION, ["AU4", "AU7"], "Anger", ["the answer was not Anger", "AU9 was cited"])
    yield "You are a helpful assistant. system user assistant"
    yield " ".join(f"{e} {e.lower()}" for e in EMOTIONS)
    rng = random.Random(seed)
    for _ in range(n):
        emotion = rng.choice(EMOTIONS)
        intensity, uni = sample_aus(emotion, rng)
        yield describe(visible_aus(intensity), emotion, rng, uni)


# ---- data set -------------------------------------------------------------------------

def make_sample(index: int, seed: int, size: int) -> tuple[dict, Image.Image]:
    """Sample `index` of the data set with `seed`: independent of every other index."""
    rng = random.Random(f"synfacs-{seed}-{index}")
    emotion = EMOTIONS[rng.randrange(len(EMOTIONS))]
    intensity, unilateral = sample_aus(emotion, rng)
    ident, pose = sample_identity(rng), sample_pose(rng)
    image = render_face(intensity, ident, pose, size, unilateral, noise_seed=rng.randrange(2**31))
    aus = visible_aus(intensity)
    sample = {
        "id": f"synfacs-{seed}-{index:06d}",
        "dataset": "synfacs",
        "image": f"images/{index:06d}.png",
        "question": DEFAULT_QUESTION,
        "AUs": aus,
        "labels": [emotion],
        "description": describe(aus, emotion, rng, unilateral),
        "meta_info": {"intensity": {k: round(v, 3) for k, v in sorted(intensity.items())},
                      "unilateral": unilateral, "identity": asdict(ident), "pose": asdict(pose)},
    }
    return sample, image


def synth_faces(out: str | Path, n: int, seed: int = 0, size: int = 112, test_fraction: float = 0.1,
                reasoning_fraction: float = 1.0, preview: bool = False) -> dict:
    """Render `n` faces into `out/images`, write `out/train.jsonl` and `out/test.jsonl`.

    The last `test_fraction` of indices is the test split (always with descriptions, as the
    reference for ROUGE-L). Of the train split only `reasoning_fraction` keeps its description.
    """
    from tqdm import tqdm

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    n_test = int(round(n * test_fraction))
    n_train = n - n_test
    n_reason = int(round(n_train * reasoning_fraction))
    keep_reason = set(random.Random(f"reason-{seed}").sample(range(n_train), n_reason))
    train, test = [], []
    for i in tqdm(range(n), desc="synth-faces", unit="face", disable=n < 200):
        sample, image = make_sample(i, seed, size)
        image.save(out / sample["image"], optimize=False, compress_level=1)
        if i >= n_train:
            test.append(sample)
        else:
            if i not in keep_reason:
                sample["description"] = ""
            train.append(sample)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    if preview:
        contact_sheet(out, train + test, out / "preview.png")
    log.info("SynFACS: %d train (%d with reasoning), %d test -> %s", len(train), n_reason, len(test), out)
    return {"train": len(train), "test": len(test), "with_reasoning": n_reason}


def contact_sheet(root: Path, samples: list[dict], path: Path, cols: int = 8, rows: int = 6) -> Path:
    """A grid of faces with their emotion and AUs underneath, one emotion per column first."""
    by_emotion = {e: [s for s in samples if s["labels"] == [e]] for e in EMOTIONS}
    picked = [s for k in range(rows) for e in EMOTIONS if len(by_emotion[e]) > k for s in [by_emotion[e][k]]]
    cell, text_h = 140, 34
    sheet = Image.new("RGB", (cols * cell, rows * (cell + text_h)), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for k, s in enumerate(picked[: cols * rows]):
        x, y = (k % cols) * cell, (k // cols) * (cell + text_h)
        face = Image.open(root / s["image"]).convert("RGB").resize((cell - 8, cell - 8))
        sheet.paste(face, (x + 4, y + 4))
        d.text((x + 4, y + cell - 2), s["labels"][0], fill=(0, 0, 0))
        aus = " ".join(a[2:] for a in s["AUs"]) or "-"
        d.text((x + 4, y + cell + 12), "AU " + aus, fill=(60, 60, 160))
    sheet.save(path)
    return path


def image_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
