"""The FEA sample schema (Facial-R1): JSONL read/write, validation, image resolution.

A sample has exactly these fields::

    id          str, unique within a file
    dataset     str, source dataset name
    image       str, path relative to one of the --image-folders
    question    str, the question asked about the face
    AUs         list of AU codes ("AU4"), or null when the sample has no AU labels
    labels      list of canonical emotions, [] when unlabelled. The FIRST is the sample's
                emotion: rewards, synthesis QC, eval and the guided prompt all score against it
                (as Facial-R1's released trainer does with labels[0]); the rest is kept as data.
    description str, AU-grounded reasoning "<think>..</think><answer>..</answer>", or ""
    meta_info   dict, anything else (subject id, intensities, provenance)

`read_jsonl` normalises AU names and emotion labels; every error names FILE:LINE. AU codes
come in any form datasets write (`AU12`, `au 12`, `12`, `L12`, `R14B`); a well-formed code the
FACS manual lacks (AU3, AU47) and the head/eye codes (AU51..AU66) are dropped from the row and
counted per file in the `ReadReport`; a malformed code is an error.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from facial_r1.errors import FacialR1Error, ImageError
from facial_r1.facs import normalize_emotion, parse_au_code, sort_aus
from facial_r1.prompts import DEFAULT_QUESTION

log = logging.getLogger(__name__)

FIELDS = ("id", "dataset", "image", "question", "AUs", "labels", "description", "meta_info")
REQUIRED = ("id", "image")
MAX_IMAGE_PIXELS = 40_000_000  # refuse larger images (decompression bombs)


@dataclass
class ReadReport:
    path: str
    n_read: int = 0
    errors: list[str] = field(default_factory=list)  # "FILE:LINE: what"
    n_lines: int = 0  # non-blank lines: every row the file offers
    skipped: Counter = field(default_factory=Counter)  # reason -> rows skipped (with skip_bad)
    unknown_aus: Counter = field(default_factory=Counter)  # well-formed codes FACS lacks, dropped
    not_scored_aus: Counter = field(default_factory=Counter)  # head/eye codes, dropped

    @property
    def n_skipped(self) -> int:
        return len(self.errors)


def normalize_sample(raw: object, report: ReadReport | None = None) -> dict:
    """Check one decoded JSON object against the schema; return it normalised.

    Raises FacialR1Error with a message saying what is wrong (no location; callers add it).
    AU codes outside the scored FACS table are dropped and counted in `report`.
    """
    if not isinstance(raw, dict):
        raise FacialR1Error(f"expected a JSON object, got {type(raw).__name__}")
    extra = sorted(set(raw) - set(FIELDS))
    if extra:
        raise FacialR1Error(f"unknown field(s) {extra}; FEA fields are {list(FIELDS)}")
    missing = [f for f in REQUIRED if not raw.get(f)]
    if missing:
        raise FacialR1Error(f"missing required field(s) {missing}")
    for name in ("id", "image"):
        if not isinstance(raw[name], str):
            raise FacialR1Error(f"field {name!r} must be a string")
    check_path_text(raw["image"], raw["id"])
    aus = raw.get("AUs")
    if aus is not None and not isinstance(aus, list):
        raise FacialR1Error("field 'AUs' must be a list or null")
    labels = raw.get("labels") or []
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, list):
        raise FacialR1Error("field 'labels' must be a list of emotion names")
    meta = raw.get("meta_info") or {}
    if not isinstance(meta, dict):
        raise FacialR1Error("field 'meta_info' must be an object")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise FacialR1Error("field 'description' must be a string")
    return {
        "id": raw["id"],
        "dataset": str(raw.get("dataset") or ""),
        "image": raw["image"],
        "question": str(raw.get("question") or DEFAULT_QUESTION),
        "AUs": None if aus is None else normalize_aus(aus, report),
        "labels": list(dict.fromkeys(normalize_emotion(lab) for lab in labels)),
        "description": description,
        "meta_info": meta,
    }


def normalize_aus(values: list, report: ReadReport | None = None) -> list[str]:
    """The scored FACS AUs of a row's `AUs` list; other well-formed codes are counted and dropped."""
    kept = []
    for value in values:
        code = parse_au_code(value)
        if code.kind == "au":
            kept.append(code.code)
        elif report is not None:
            (report.unknown_aus if code.kind == "unknown" else report.not_scored_aus)[code.code] += 1
    return sort_aus(kept)


def check_path_text(image: str, sample_id: object) -> None:
    """An `image` field must be a path the file system can take: no NUL, no unpaired surrogate."""
    if "\x00" in image:
        raise FacialR1Error(f"sample {sample_id}: image path {image!r} contains a NUL byte")
    try:
        image.encode("utf-8")
    except UnicodeEncodeError:
        raise FacialR1Error(f"sample {sample_id}: image path {image!r} is not valid Unicode") from None


def read_jsonl(path: str | Path, skip_bad: bool = False, report: ReadReport | None = None) -> list[dict]:
    """Read and validate an FEA JSONL file.

    A bad line raises `FacialR1Error("FILE:LINE: ...")`, or with `skip_bad` is skipped and
    recorded in `report.errors`. Duplicate ids are errors too.
    """
    path = Path(path)
    report = report if report is not None else ReadReport(str(path))
    if not path.is_file():
        raise FacialR1Error(f"{path}: no such file")
    samples, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            report.n_lines += 1
            try:
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as e:
                    raise FacialR1Error(f"invalid JSON ({e.msg} at column {e.colno})") from None
                sample = normalize_sample(raw, report)
                if sample["id"] in seen:
                    raise FacialR1Error(f"duplicate id {sample['id']!r} (first on line {seen[sample['id']]})")
            except FacialR1Error as e:
                message = f"{path}:{lineno}: {e}"
                if not skip_bad:
                    raise FacialR1Error(message) from None
                report.errors.append(message)
                report.skipped["bad_row"] += 1
                continue
            seen[sample["id"]] = lineno
            samples.append(sample)
    report.n_read = len(samples)
    if report.errors:
        log.warning("%s: skipped %d bad line(s)", path, len(report.errors))
    if report.unknown_aus:
        log.warning("%s: dropped AU codes the FACS manual lacks: %s", path, dict(report.unknown_aus))
    if report.not_scored_aus:
        log.info("%s: dropped head/eye codes (not scored): %s", path, dict(report.not_scored_aus))
    return samples


def write_jsonl(path: str | Path, samples: Iterable[dict]) -> int:
    """Write samples atomically (temp file in the same folder, then rename). Returns count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for sample in samples:
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def resolve_image(image: str, image_folders: Sequence[str | Path], sample_id: str = "?") -> Path:
    """The file an FEA `image` field names, inside one of `image_folders`.

    Absolute paths and paths that leave their folder (`..`, or a symlink pointing out)
    are refused; the first folder that holds the file wins.
    """
    if not image_folders:
        raise FacialR1Error(f"sample {sample_id}: no --image-folders given")
    check_path_text(image, sample_id)
    if os.path.isabs(image) or Path(image).drive:
        raise FacialR1Error(f"sample {sample_id}: image path {image!r} is absolute; it must be relative to --image-folders")
    for folder in image_folders:
        root = Path(folder).resolve()
        candidate = (root / image).resolve()
        if root != candidate and root not in candidate.parents:
            raise FacialR1Error(f"sample {sample_id}: image path {image!r} escapes its folder {folder}")
        if candidate.is_file():
            return candidate
    raise FacialR1Error(f"sample {sample_id}: image {image!r} not found in {[str(f) for f in image_folders]}")


def load_image(source: str | Path | bytes, sample_id: str = "?", max_pixels: int = MAX_IMAGE_PIXELS,
               formats: Collection[str] | None = None, max_side: int | None = None) -> Image.Image:
    """Open an image file (or the bytes of one) as RGB. Unreadable, corrupt or oversized images, and
    formats outside `formats` (PIL names such as "JPEG") when given, raise ImageError with the sample id.

    The pixel limit is checked on the header, before any pixel is decoded. An EXIF orientation is
    applied, so the image is upright as a viewer (and the serve page) shows it. With `max_side`, the
    image is reduced at once so its longer side is at most that: a JPEG is decoded at a reduced
    scale (`Image.draft`), then one resize; `image.info["scale"]` is the factor back to the
    upright original's pixels (1.0 when not reduced).
    """
    where = f"sample {sample_id}: image" + ("" if isinstance(source, bytes) else f" {source}")
    with _reading(where):
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            if formats is not None and im.format not in formats:
                raise ImageError(f"{where} is {im.format}; accepted: {', '.join(sorted(formats))}", "format")
            full, header = max(im.size), im.size
            if max_side and full > max_side and im.format == "JPEG":
                # decode at 1/2, 1/4 or 1/8 scale, never below the reduced size the image is headed for
                im.draft("RGB", (im.width * max_side // full, im.height * max_side // full))
            # The limit is on the pixels that will be decoded: the header's, or a JPEG's reduced draft.
            if im.width * im.height > max_pixels:
                raise ImageError(f"{where} is {header[0]}x{header[1]}, over the {max_pixels} pixel limit", "too_large")
            im.load()
            # Upright as viewers see it: phone photos store their rotation in EXIF.
            out = to_rgb(ImageOps.exif_transpose(im))
            if max_side and max(out.size) > max_side:
                out.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            out.info["scale"] = full / max(out.size)
            return out


@contextmanager
def _reading(where: str):
    """PIL's errors while an image is read, as ImageError naming the sample and the kind of fault."""
    try:
        yield
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{where}: cannot read image: not a format PIL knows", "not_image") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{where}: cannot read image: {e}", "too_large") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{where}: cannot read image: {e}", "corrupt") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as a viewer shows the image: 16-bit, 32-bit and float gray are scaled to 0..255
    (PIL's own conversion clips them: a 16-bit photo turns white), transparency is laid over
    white, and palette, CMYK, 1-bit and gray images are converted.

    >>> to_rgb(Image.new("I;16", (1, 1), 32896)).getpixel((0, 0))
    (128, 128, 128)
    >>> to_rgb(Image.new("LA", (1, 1), (0, 0))).getpixel((0, 0))  # fully transparent black
    (255, 255, 255)
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        values = np.asarray(image, dtype=np.float64)
        peak = float(values.max(initial=0.0))
        # the range the values were stored in: [0, 1] floats, 8-bit, else 16-bit
        top = 1.0 if image.mode == "F" and peak <= 1.0 else 255.0 if peak <= 255 else 65535.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    elif image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def read_samples_with_images(
    path: str | Path, image_folders: Sequence[str | Path], skip_bad: bool = False,
    report: ReadReport | None = None, decode: bool = True,
) -> tuple[list[dict], list[str]]:
    """Read a JSONL file and check every image resolves and decodes (`decode=False`: that its
    header reads, no pixel decoded).

    Returns (good samples with `image_path` added, error messages). Without `skip_bad`
    the first error raises. `report` (when given) counts every row: `n_lines`, and the
    skipped ones by reason (bad_row, image_missing, image_corrupt, ...).
    """
    report = report if report is not None else ReadReport(str(path))
    samples = read_jsonl(path, skip_bad=skip_bad, report=report)
    good, errors = with_images(samples, image_folders, path, skip_bad, report, decode)
    return good, list(report.errors) + errors


def with_images(samples: Sequence[dict], image_folders: Sequence[str | Path], path: str | Path,
                skip_bad: bool = False, report: ReadReport | None = None,
                decode: bool = True) -> tuple[list[dict], list[str]]:
    """The samples whose image resolves inside the folders and decodes (or, `decode=False`,
    whose header reads: format, size and the pixel limit), with `image_path` added; the errors."""
    good, errors = [], []
    for sample in samples:
        try:
            image_path = resolve_image(sample["image"], image_folders, sample["id"])
            (load_image if decode else check_image_header)(image_path, sample["id"])
        except FacialR1Error as e:
            if not skip_bad:
                raise FacialR1Error(f"{path}: {e}") from None
            errors.append(f"{path}: {e}")
            if report is not None:
                report.skipped[f"image_{e.kind}" if isinstance(e, ImageError) else "image_missing"] += 1
            continue
        good.append({**sample, "image_path": str(image_path)})
    return good, errors


def check_image_header(source: str | Path, sample_id: str = "?", max_pixels: int = MAX_IMAGE_PIXELS) -> tuple:
    """An image file's (width, height) from its header alone: it opens as a format PIL knows, and
    its size is under the pixel limit. Nothing is decoded (that waits for the batch that needs it)."""
    where = f"sample {sample_id}: image {source}"
    with _reading(where), Image.open(source) as im:
        if im.width * im.height > max_pixels:
            raise ImageError(f"{where} is {im.width}x{im.height}, over the {max_pixels} pixel limit", "too_large")
        return im.size


def to_dataset(samples: Sequence[dict]):
    """A `datasets.Dataset` of samples; `meta_info` travels as a JSON string (free-form)."""
    from datasets import Dataset

    rows = [{**s, "meta_info": json.dumps(s.get("meta_info", {}))} for s in samples]
    return Dataset.from_list(rows)


def parse_folders(value: str | Sequence[str] | None) -> list[str]:
    """'a,b' or ['a', 'b'] -> ['a', 'b']."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return [str(v) for v in value]
