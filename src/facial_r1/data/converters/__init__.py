"""Converters from the public FEA data sets to FEA JSONL.

    facial-r1 data convert --format NAME --input PATH --out DIR [--folds 3] [--classes 7|8]

Each converter reads the data set in its published layout and returns FEA samples whose
`image` is relative to the folder it names (pass that folder as --image-folders later).
A malformed row raises `FILE:LINE: expected ...`; missing image files are counted and
listed in the report, not fatal. JSONL outputs are written atomically.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facial_r1.data.schema import write_jsonl
from facial_r1.errors import FacialR1Error

FORMATS = ("fer2013", "rafdb", "affectnet", "disfa", "bp4d", "rafau", "faba", "fea20k")


@dataclass
class Converted:
    splits: dict[str, list[dict]]  # split name -> samples
    image_root: Path  # the folder every `image` is relative to
    missing: list[str] = field(default_factory=list)  # image paths that were not found
    # file -> {"unknown": {code: n}, "not_scored": {code: n}}: AU codes dropped from rows (codes
    # the FACS manual lacks; head/eye codes), counted per file, never fatal.
    dropped_aus: dict[str, dict] = field(default_factory=dict)


def note_dropped(result_notes: dict, path, report) -> None:
    """Record a ReadReport's dropped AU codes (counted by schema.normalize_aus) under the file's name."""
    if report.unknown_aus or report.not_scored_aus:
        result_notes[str(path)] = {"unknown": dict(report.unknown_aus), "not_scored": dict(report.not_scored_aus)}


def row_error(path, line: int, expected: str, got: object) -> FacialR1Error:
    return FacialR1Error(f"{path}:{line}: expected {expected}, got {str(got)[:80]!r}")


def check_images(samples: list[dict], root: Path) -> list[str]:
    return [s["image"] for s in samples if not (root / s["image"]).is_file()]


def subject_folds(samples: list[dict], k: int) -> list[list[dict]]:
    """Subject-exclusive folds: subjects sorted by id, dealt into k contiguous groups."""
    subjects = sorted({s["meta_info"]["subject"] for s in samples})
    size = -(-len(subjects) // k)
    groups = [set(subjects[i * size:(i + 1) * size]) for i in range(k)]
    return [[s for s in samples if s["meta_info"]["subject"] in g] for g in groups]


def convert(fmt: str, input_path: str, out: str, folds: int = 0, classes: int = 8) -> dict:
    if fmt not in FORMATS:
        raise FacialR1Error(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    src = Path(input_path)
    if not src.exists():
        raise FacialR1Error(f"{src}: no such file or folder")
    module = importlib.import_module(f"facial_r1.data.converters.{fmt}")
    kwargs = {"classes": classes} if fmt == "affectnet" else {}
    if fmt in ("fer2013",):
        kwargs["out"] = Path(out)
    result: Converted = module.convert(src, **kwargs)
    out_dir = Path(out)
    written = {}
    for split, samples in result.splits.items():
        written[split] = write_jsonl(out_dir / f"{split}.jsonl", samples)
    if folds:
        if fmt not in ("disfa", "bp4d"):
            raise FacialR1Error("--folds applies to disfa and bp4d (subject-exclusive AU folds)")
        everything = [s for v in result.splits.values() for s in v]
        for i, fold in enumerate(subject_folds(everything, folds)):
            written[f"fold{i + 1}"] = write_jsonl(out_dir / f"fold{i + 1}.jsonl", fold)
    report = {"format": fmt, "written": written, "image_folder": str(result.image_root),
              "missing_images": len(result.missing), "missing_examples": result.missing[:20],
              "dropped_au_codes": result.dropped_aus}
    (out_dir / "convert_report.json").write_text(json.dumps({**report, "missing": result.missing}, indent=1))
    return report


def fea_sample(sid: str, dataset: str, image: str, aus: Sequence[str] | None, labels: Sequence[str],
               meta: dict, description: str = "") -> dict:
    from facial_r1.prompts import DEFAULT_QUESTION

    return {"id": sid, "dataset": dataset, "image": image, "question": DEFAULT_QUESTION,
            "AUs": None if aus is None else list(aus), "labels": list(labels), "description": description,
            "meta_info": meta}
