"""`facial-r1 analyze`: faces in images, folders and videos -> one JSON object (or CSV row) per face.

    facial-r1 analyze photo.jpg shots/ clip.mp4 [--backend landmarks|vlm --model CKPT] [--every 1.0] [--csv]

MediaPipe finds the faces for both backends, small and far ones too (the [faces] extra;
landmarks.py). The `landmarks` backend reads the AUs from the Face Landmarker's blendshapes (a
found face it cannot read, such as a profile, gets a box and an `error`); the `vlm` backend crops
each face and lets a trained checkpoint write its analysis, in batches. Every input that
fails (not an image or video, corrupt, too large, no face) yields an object with an `error`
and the rest of the batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from facial_r1.data.schema import load_image
from facial_r1.errors import FacialR1Error
from facial_r1.landmarks import MIN_FACE, LandmarkAnalyser
from facial_r1.parse import parse_completion

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
CSV_FIELDS = ("file", "frame", "box", "aus", "emotion", "reasoning", "error")
UNREAD = "face found, expression not readable (turned away, covered or blurred)"


def analyze(paths: Iterable[str], backend: str = "landmarks", model: str | None = None, every: float = 1.0,
            batch_size: int = 8, landmarker: str | None = None, max_new_tokens: int = 160,
            min_face: int = MIN_FACE, threads: int = 1) -> Iterator[dict]:
    """One dict per face found (or per input that failed), in input order; `batch_size` images a batch;
    faces down to `min_face` px wide are searched for, by `threads` face detectors side by side."""
    with FaceAnalyser(backend, model, landmarker, max_new_tokens, min_face, threads) as analyser:
        for chunk in _chunks(_frames(paths, every), batch_size):
            found = iter(analyser([item["image"] for item in chunk if "image" in item]))
            for item in chunk:
                if "error" in item:
                    yield item
                else:
                    item.pop("image")
                    yield from face_results(item, next(found))


def face_results(item: dict, faces: list[dict]) -> list[dict]:
    """The output objects for one image: its faces, each with the input's fields, or one error."""
    return [{**item, **face} for face in faces] or [{**item, "error": "no face found"}]


class FaceAnalyser:
    """Finds the faces in a batch of images and analyses each; `analyser(images)` -> per image a
    list of {'box', 'aus', 'emotion', 'reasoning'}. Used by `analyze` and by the server's worker."""

    def __init__(self, backend: str = "landmarks", model: str | None = None, landmarker: str | None = None,
                 max_new_tokens: int = 160, min_face: int = MIN_FACE, threads: int = 1):
        if backend not in ("landmarks", "vlm"):
            raise FacialR1Error(f"unknown backend {backend!r}; choose landmarks or vlm")
        if backend == "vlm" and not model:
            raise FacialR1Error("the vlm backend needs --model CKPT")
        self.backend, self.model, self.max_new_tokens = backend, model, max_new_tokens
        self.vlm = _load_vlm(model) if backend == "vlm" else None
        self.finder = LandmarkAnalyser(landmarker, min_face=min_face, threads=threads)

    def close(self) -> None:
        self.finder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __call__(self, images: list) -> list[list[dict]]:
        results, crops = [], []  # crops: (the face's dict, its crop) for the VLM, one batch for all images
        for image in images:
            faces = []
            for face in self.finder.analyse(image):
                row = {"box": list(face.box)}
                if self.vlm is None:
                    row.update(aus=list(face.aus), emotion=face.emotion, reasoning=face.reasoning)
                    if not face.read:
                        row["error"] = UNREAD
                else:
                    crops.append((row, _crop(image, face.box)))
                faces.append(row)
            results.append(faces)
        if crops:
            self._describe(crops)
        return results

    def _describe(self, crops: list) -> None:
        from facial_r1.generation import generate
        from facial_r1.prompts import analysis_prompt

        net, processor, style = self.vlm
        texts = generate(net, processor, [crop for _, crop in crops], [analysis_prompt(style=style)] * len(crops),
                         self.max_new_tokens)
        for (row, _), text in zip(crops, texts, strict=True):
            a = parse_completion(text)
            row.update(aus=list(a.aus), emotion=a.answer, reasoning=text.strip())


def _chunks(items: Iterable[dict], images_per_chunk: int) -> Iterator[list[dict]]:
    """Consecutive items, cut after every `images_per_chunk` items that carry an image."""
    chunk, images = [], 0
    for item in items:
        chunk.append(item)
        images += "image" in item
        if images >= images_per_chunk:
            yield chunk
            chunk, images = [], 0
    if chunk:
        yield chunk


def _frames(paths: Iterable[str], every: float = 1.0) -> Iterator[dict]:
    """{'file', 'frame', 'image'} per image or sampled video frame, or {'file', 'frame', 'error'}."""
    for path in _expand(paths):
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            yield from _video_frames(path, every)
        elif suffix in IMAGE_SUFFIXES:
            try:
                yield {"file": str(path), "frame": None, "image": load_image(path, path.name)}
            except FacialR1Error as e:
                yield {"file": str(path), "frame": None, "error": str(e)}
        else:
            yield {"file": str(path), "frame": None, "error": "not an image or video file"}


def _expand(paths: Iterable[str]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            yield p


def _video_frames(path: Path, every: float = 1.0) -> Iterator[dict]:
    import cv2
    from PIL import Image

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        yield {"file": str(path), "frame": None, "error": "cannot open video"}
        return
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    step, index = max(1, round(fps * every)), 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                yield {"file": str(path), "frame": index, "image": Image.fromarray(frame[:, :, ::-1].copy())}
            index += 1
    finally:
        capture.release()
    if index == 0:
        yield {"file": str(path), "frame": None, "error": "no frames could be decoded"}


def _crop(image, box, margin: float = 0.15):
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return image.crop((max(0, x0 - dx), max(0, y0 - dy), min(image.width, x1 + dx), min(image.height, y1 + dy)))


def _load_vlm(model: str):
    from facial_r1 import checkpoints, generation

    net, processor = checkpoints.load(model)
    net.to(generation.process_state().device)  # the GPU when there is one
    return net, processor, checkpoints.read_prompt_settings(model)["prompt"]
