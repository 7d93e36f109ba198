"""Face-finding recall by face size on group photos made from real photos with known face boxes.

    OMP_NUM_THREADS=1 python benchmarks/face_detection.py [--images 12] [--seed 0]

The photos (tests/data/photos, public domain or CC0, see LICENSE.md there) hold three real
faces: a frontal smile, a frontal closed mouth, a profile half hidden by a camera. Each group
photo pastes some of them, mirrored or not, turned in-plane by up to 30 degrees, at one face
width (40-300 px) onto a real background (1000x667, 1600x1067 or 2560x1920 px); a third of
the photos are gray. A face counts as found when a reported box overlaps its true box with
IoU >= 0.3; every other reported box is a false positive. Expression right: the face was read
and its emotion is the one the photo shows (EMOTIONS). Speed is faces/s over the whole run
(finding and reading the expressions), one thread unless --threads.

Rows to compare: `--landmarker-only` (MediaPipe's Face Landmarker on the whole image, as the
analyser was before), `--min-face 100000` (the full-range detector on the whole image, no tiles).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageOps

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"
# Each face's box (x0, y0, x1, y1) in its photo: brows to chin, ear to ear, as a face detector draws it.
FACES = {
    "astronaut.jpg": (172, 68, 275, 171),     # frontal, broad smile with teeth
    "grace_hopper.jpg": (166, 130, 365, 329),  # frontal, lips closed, glasses
    "camera.jpg": (196, 112, 278, 198),       # profile, half hidden by a camera, gray
}
# The expression each shows, written down before any rule was run on them (as in tests/test_landmarks.py).
EMOTIONS = {"astronaut.jpg": "Happiness", "grace_hopper.jpg": "Neutral", "camera.jpg": "Neutral"}
BACKGROUNDS = ("coffee.jpg", "rocket.jpg", "brick.jpg", "chelsea.jpg")
CANVASES = ((1000, 667), (1600, 1067), (2560, 1920))
SIZES = (40, 60, 90, 130, 200, 300)


def group_photo(rng: random.Random, face_width: int, canvas: tuple[int, int] = (1000, 667), n_faces: int = 5,
                max_angle: float = 30.0, gray: bool = False,
                faces: tuple[str, ...] = tuple(FACES), pasted: list | None = None,
                ) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A photo with up to `n_faces` real faces `face_width` px wide; returns it and the true boxes.
    `pasted`, when given, receives (photo name, angle) per face."""
    width, height = canvas
    image = _background(rng, canvas)
    cell = int(face_width * 2.6)
    cols, rows = max(1, width // cell), max(1, height // cell)
    slots = rng.sample([(c, r) for c in range(cols) for r in range(rows)], min(n_faces, cols * rows))
    boxes = []
    for c, r in slots:
        name, angle = rng.choice(faces), rng.uniform(-max_angle, max_angle)
        patch, mask, face_box = _patch(name, face_width, angle, rng.random() < 0.5)
        if pasted is not None:
            pasted.append((name, angle))
        # centre the patch in its cell, jittered by up to a tenth of the cell
        x = int(c * cell + (cell - patch.width) / 2 + rng.uniform(-0.1, 0.1) * cell)
        y = int(r * cell + (cell - patch.height) / 2 + rng.uniform(-0.1, 0.1) * cell)
        image.paste(patch, (x, y), mask)
        boxes.append((face_box[0] + x, face_box[1] + y, face_box[2] + x, face_box[3] + y))
    return (image.convert("L") if gray else image), boxes


def _background(rng: random.Random, canvas: tuple[int, int]) -> Image.Image:
    bg = Image.open(PHOTOS / rng.choice(BACKGROUNDS)).convert("RGB")
    return ImageOps.fit(bg, canvas, Image.Resampling.BICUBIC)


def _patch(name: str, face_width: int, angle: float, mirror: bool):
    """Head and shoulders around a face, scaled so the face is `face_width` px wide and turned by `angle`;
    returns (patch, feathered elliptic mask, the face's box in the patch)."""
    photo = Image.open(PHOTOS / name).convert("RGB")
    x0, y0, x1, y1 = FACES[name]
    if mirror:
        photo, (x0, x1) = ImageOps.mirror(photo), (photo.width - x1, photo.width - x0)
    f, cx, cy = x1 - x0, (x0 + x1) / 2, (y0 + y1) / 2
    half = 1.2 * f
    crop = (max(0, int(cx - half)), max(0, int(cy - half)), min(photo.width, int(cx + half)),
            min(photo.height, int(cy + 1.4 * half)))
    scale = face_width / f
    patch = photo.crop(crop).resize((round((crop[2] - crop[0]) * scale), round((crop[3] - crop[1]) * scale)),
                                    Image.Resampling.LANCZOS)
    mask = Image.new("L", patch.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, patch.width - 1, patch.height - 1), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1, patch.width // 20)))
    fx, fy = (cx - crop[0]) * scale, (cy - crop[1]) * scale  # the face centre in the patch
    patch = patch.rotate(angle, Image.Resampling.BICUBIC, expand=True, center=None)
    rotated_mask = mask.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    # where the face centre went: rotate it about the patch centre (PIL turns counter-clockwise)
    w0, h0 = mask.size
    a = math.radians(angle)
    dx, dy = fx - w0 / 2, fy - h0 / 2
    fx2 = patch.width / 2 + dx * math.cos(a) + dy * math.sin(a)
    fy2 = patch.height / 2 - dx * math.sin(a) + dy * math.cos(a)
    half_face = face_width / 2
    return patch, rotated_mask, (round(fx2 - half_face), round(fy2 - half_face),
                                 round(fx2 + half_face), round(fy2 + half_face))


def matched(found: list, truth: list, threshold: float = 0.3) -> tuple[dict[int, int], int]:
    """({true face index: found box index}, false positives): each found box used once, best overlap first."""
    from facial_r1.landmarks import overlap

    pairs = sorted(((overlap(f, t)[0], i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_f, pairing = set(), {}
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i not in used_f and j not in pairing:
            used_f.add(i)
            pairing[j] = i
    return pairing, len(found) - len(used_f)


def match(found: list, truth: list, threshold: float = 0.3) -> tuple[int, int]:
    """(true faces found, false positives)."""
    hits, false = matched(found, truth, threshold)
    return len(hits), false


def photos(n_images: int, seed: int):
    """(face width, gray, image, true boxes, (photo, angle) per face) for `n_images` photos per face width."""
    rng = random.Random(seed)
    for size in SIZES:
        for k in range(n_images):
            gray, pasted = k % 3 == 2, []
            image, boxes = group_photo(rng, size, CANVASES[k % len(CANVASES)], n_faces=6, gray=gray, pasted=pasted)
            yield size, gray, image, boxes, pasted


def main(n_images: int, seed: int, min_face: int, landmarker_only: bool = False, threads: int = 1) -> None:
    from collections import Counter

    from facial_r1.landmarks import LandmarkAnalyser

    faces_n, found_n, read_n, right_n, false_n = Counter(), Counter(), Counter(), Counter(), Counter()  # by row
    reported, elapsed = 0, 0.0
    with (WholeImageLandmarker() if landmarker_only else LandmarkAnalyser(min_face=min_face, threads=threads)) as analyser:
        for size, gray, image, truth, pasted in photos(n_images, seed):
            start = time.perf_counter()
            faces = analyser.analyse(image)
            elapsed += time.perf_counter() - start
            found, false = matched([f.box for f in faces], truth)
            read = {j for j, i in found.items() if faces[i].read}
            false_n[f"{size} px"] += false
            reported += len(faces)
            for j, (name, angle) in enumerate(pasted):
                for row in (f"{size} px", "gray" if gray else "colour", f"turned {_angle_bucket(angle)} deg",
                            name.removesuffix(".jpg")):
                    faces_n[row] += 1
                    found_n[row] += j in found
                    read_n[row] += j in read
                    right_n[row] += j in read and faces[found[j]].emotion == EMOTIONS[name]
    finder = "the Face Landmarker alone, whole image" if landmarker_only else f"min_face {min_face}, {threads} detector thread(s)"
    print(f"{n_images} photos per face width (canvases {', '.join(f'{w}x{h}' for w, h in CANVASES)}), "
          f"seed {seed}, {finder}, CPU, one thread")
    print("| faces | n | found | read | expression right | false positives |")
    print("|---|---|---|---|---|---|")
    order = ([f"{size} px" for size in SIZES] + ["colour", "gray"] + [f"turned {b} deg" for b in ("0-10", "10-20", "20-30")]
             + [name.removesuffix(".jpg") for name in FACES])
    for row in (r for r in order if r in faces_n):
        false = false_n[row] if row in false_n else ""
        print(f"| {row} | {faces_n[row]} | {found_n[row] / faces_n[row]:.2f} | {read_n[row] / faces_n[row]:.2f} "
              f"| {right_n[row] / faces_n[row]:.2f} | {false} |")
    print(f"{reported} faces reported in {elapsed:.1f} s: {reported / elapsed:.1f} faces/s, "
          f"{elapsed / (n_images * len(SIZES)) * 1000:.0f} ms per photo")


def _angle_bucket(angle: float) -> str:
    return "0-10" if abs(angle) < 10 else "10-20" if abs(angle) < 20 else "20-30"


class WholeImageLandmarker:
    """The analyser before full-range detection: MediaPipe's Face Landmarker on the whole image
    (its own short-range detector), for comparison."""

    def __init__(self):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        from facial_r1.landmarks import default_model_path

        self.mp = mp
        self.landmarker = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(default_model_path())), num_faces=32,
            output_face_blendshapes=True))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.landmarker.close()

    def analyse(self, image):
        from types import SimpleNamespace

        import numpy as np

        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        h, w = pixels.shape[:2]
        result = self.landmarker.detect(self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=pixels))
        from facial_r1.landmarks import emotion_from_blendshapes

        return [SimpleNamespace(box=(min(p.x for p in pts) * w, min(p.y for p in pts) * h,
                                     max(p.x for p in pts) * w, max(p.y for p in pts) * h), read=True,
                                emotion=emotion_from_blendshapes({s.category_name: s.score for s in shapes}))
                for pts, shapes in zip(result.face_landmarks, result.face_blendshapes, strict=True)]


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-face", type=int, default=40,
                   help="smallest face searched for; 100000 searches the whole image only (no tiles)")
    p.add_argument("--landmarker-only", action="store_true",
                   help="the Face Landmarker alone on the whole image (the analyser before this detector)")
    p.add_argument("--threads", type=int, default=1, help="face detectors side by side")
    a = p.parse_args()
    main(a.images, a.seed, a.min_face, a.landmarker_only, a.threads)
