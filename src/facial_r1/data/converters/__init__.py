"""Converters from the public FEA data sets to FEA JSONL.

    facial-r1 data convert --format NAME --input PATH --out DIR [--folds 3] [--classes 7|8] [--strict]

Each converter reads the data set in the layouts its users actually have (each cited in the
converter and in docs/data.md) and returns FEA samples whose `image` is relative to the folder
it names (pass that folder as --image-folders later). Every input row is accounted for in
`convert_report.json`: rows read = rows written + rows dropped, each drop under a reason with a
few examples. A row the converter cannot read or map is dropped and counted, never fatal,
unless `strict` (--strict), where it raises `FILE:LINE: ...`. Missing image files are counted
and listed, not fatal. JSONL outputs are written atomically.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facial_r1.data.schema import write_jsonl
from facial_r1.errors import FacialR1Error

log = logging.getLogger(__name__)

FORMATS = ("fer2013", "rafdb", "affectnet", "disfa", "bp4d", "rafau", "faba", "fea20k")
EXAMPLES = 5  # examples kept per drop reason


@dataclass
class Converted:
    splits: dict[str, list[dict]]  # split name -> samples
    image_root: Path  # the folder every `image` is relative to
    missing: list[str] = field(default_factory=list)  # image paths that were not found
    # file -> {"unknown": {code: n}, "not_scored": {code: n}}: AU codes dropped from rows (codes
    # the FACS manual lacks; head/eye codes), counted per file, never fatal.
    dropped_aus: dict[str, dict] = field(default_factory=dict)


@dataclass
class Tally:
    """Where every input row went: read, then written or dropped under a reason (with examples).

    `drop(..., bad=True)` marks a row the converter could not read or map: under `strict` it
    raises instead. Protocol drops (AffectNet's None/Uncertain/No-Face, a BP4D frame with a 9)
    are never errors. `normalised` counts AU spellings rewritten to their FACS code
    ("T24 -> AU24"); `notes` holds what the converter found (layout, frame numbering...).
    """

    strict: bool = False
    rows_read: int = 0
    dropped: dict[str, dict] = field(default_factory=dict)
    normalised: Counter = field(default_factory=Counter)
    notes: dict = field(default_factory=dict)

    def read(self, n: int = 1) -> None:
        self.rows_read += n

    def drop(self, reason: str, where: object, got: object = "", bad: bool = False, n: int = 1) -> None:
        example = f"{where}: {str(got)[:80]!r}" if got != "" else str(where)
        if bad and self.strict:
            raise FacialR1Error(f"{where}: {reason}, got {str(got)[:80]!r} (--strict)")
        entry = self.dropped.setdefault(reason, {"n": 0, "examples": []})
        entry["n"] += n
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(example)

    def normalise(self, raw: object, code: str) -> None:
        """Count a code written otherwise than its bare number or FACS code ('L12', 'AD19')."""
        text = str(raw).strip()
        if text != code and not text.isdigit():
            self.normalised[f"{text} -> {code}"] += 1

    @property
    def rows_dropped(self) -> int:
        return sum(d["n"] for d in self.dropped.values())


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


def convert(fmt: str, input_path: str, out: str, folds: int = 0, classes: int = 8, strict: bool = False,
            frame_offset: int | None = None, intensity_threshold: int | None = None) -> dict:
    if fmt not in FORMATS:
        raise FacialR1Error(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    src = Path(input_path)
    if not src.exists():
        raise FacialR1Error(f"{src}: no such file or folder")
    if folds and fmt not in ("disfa", "bp4d"):
        raise FacialR1Error("--folds applies to disfa and bp4d (subject-exclusive AU folds)")
    if (frame_offset is not None or intensity_threshold is not None) and fmt != "disfa":
        raise FacialR1Error("--frame-offset and --intensity-threshold apply to disfa")
    module = importlib.import_module(f"facial_r1.data.converters.{fmt}")
    kwargs = {"classes": classes} if fmt == "affectnet" else {}
    if fmt == "fer2013":
        kwargs["out"] = Path(out)
    if fmt == "disfa":
        kwargs.update(frame_offset=frame_offset, threshold=2 if intensity_threshold is None else intensity_threshold)
    tally = Tally(strict=strict)
    result: Converted = module.convert(src, tally, **kwargs)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {split: write_jsonl(out_dir / f"{split}.jsonl", samples) for split, samples in result.splits.items()}
    n_written = sum(written.values())
    if tally.rows_read != n_written + tally.rows_dropped:  # a converter bug, not a data problem
        raise FacialR1Error(f"{fmt}: {tally.rows_read} rows read but {n_written} written and "
                            f"{tally.rows_dropped} dropped; every row must be accounted for")
    report = {"format": fmt, "written": written,
              "rows": {"read": tally.rows_read, "written": n_written, "dropped": tally.rows_dropped},
              "dropped": tally.dropped, "codes_normalised": dict(tally.normalised),
              "dropped_au_codes": result.dropped_aus, "image_folder": str(result.image_root),
              "missing_images": len(result.missing), "missing_examples": result.missing[:20], **tally.notes}
    if folds:
        from facial_r1.data.converters.folds import write_folds

        report.update(write_folds(fmt, [s for v in result.splits.values() for s in v], folds, out_dir))
    (out_dir / "convert_report.json").write_text(json.dumps({**report, "missing": result.missing}, indent=1))
    for line in summary(report):
        log.info(line)
    return report


def summary(report: dict) -> list[str]:
    """The report in a few lines: where the rows went, what was dropped and why."""
    rows = report["rows"]
    splits = ", ".join(f"{k} {v}" for k, v in report["written"].items())
    lines = [f"{report['format']}: {rows['read']} rows read, {rows['written']} written ({splits}), "
             f"{rows['dropped']} dropped"]
    lines += [f"  dropped {d['n']}: {reason} (e.g. {d['examples'][0]})" for reason, d in report["dropped"].items()]
    if report["codes_normalised"]:
        lines.append(f"  AU codes normalised: {report['codes_normalised']}")
    if report["dropped_au_codes"]:
        lines.append(f"  AU codes dropped from rows: {report['dropped_au_codes']}")
    if report["missing_images"]:
        lines.append(f"  {report['missing_images']} image(s) not found (e.g. {report['missing_examples'][0]})")
    return lines


def fea_sample(sid: str, dataset: str, image: str, aus: Sequence[str] | None, labels: Sequence[str],
               meta: dict, description: str = "") -> dict:
    from facial_r1.prompts import DEFAULT_QUESTION

    return {"id": sid, "dataset": dataset, "image": image, "question": DEFAULT_QUESTION,
            "AUs": None if aus is None else list(aus), "labels": list(labels), "description": description,
            "meta_info": meta}
