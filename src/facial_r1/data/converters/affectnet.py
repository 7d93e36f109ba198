"""AffectNet, in the two releases users have.

1. Manually_Annotated_file_lists/training.csv and validation.csv: rows
   subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal
   (facial_landmarks one ';'-joined field); images under Manually_Annotated/Manually_Annotated_Images/
   (or Manually_Annotated_Images/) of the data set's folder, the parent of the file lists. Some
   copies of validation.csv have no header row: public loaders read it with header=None and
   borrow training.csv's column names, or start validation.csv at line 0 and training.csv at
   line 1 (two loaders found by the code index; it did not name their repositories). A file
   whose first row is not the header is read in the release's column order.
2. train_set/ and val_set/, each images/<n>.jpg with annotations/<n>_exp.npy (also _val, _aro,
   _lnd): yaoing/DAN affectnet.py (`int(np.load(anno))` on annotations/*_exp.npy), the layout
   armand-07/emotion_recognition's data-exploration notebook counts (4 annotation files per image).
`--input` is one CSV file, the folder holding the file lists (both become splits), or the
folder holding train_set/ and val_set/. The validation list / val_set is the literature's test set.

Expression codes 0-7 map to emotions (0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust,
6 Anger, 7 Contempt); 8 None, 9 Uncertain and 10 No-Face are dropped, and with 7 classes so is
7 Contempt, each counted under its own reason. A row that cannot be read is dropped and counted.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from facial_r1.data.converters import Converted, Tally, check_images, fea_sample
from facial_r1.errors import FacialR1Error
from facial_r1.facs import LABEL_ORDERS

HEADER = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
          "expression", "valence", "arousal")
NOT_EMOTIONS = {8: "None", 9: "Uncertain", 10: "No-Face"}


def convert(src: Path, tally: Tally, classes: int = 8) -> Converted:
    if classes not in (7, 8):
        raise FacialR1Error(f"AffectNet has 7 or 8 classes, not {classes}")
    if src.is_dir() and any((src / s).is_dir() for s in ("train_set", "val_set")):
        return convert_npy(src, tally, classes)
    if src.is_dir():
        lists = src / "Manually_Annotated_file_lists" if (src / "Manually_Annotated_file_lists").is_dir() else src
        files = [f for f in (lists / "training.csv", lists / "validation.csv") if f.is_file()]
        if not files:
            raise FacialR1Error(f"{src}: no training.csv / validation.csv, and no train_set/ or val_set/")
    else:
        files = [src]
    base = files[0].parent.parent if files[0].parent.name == "Manually_Annotated_file_lists" else files[0].parent
    candidates = [base / "Manually_Annotated" / "Manually_Annotated_Images", base / "Manually_Annotated_Images",
                  files[0].parent / "Manually_Annotated_Images"]
    root = next((c for c in candidates if c.is_dir()), candidates[0])
    splits: dict[str, list[dict]] = {}
    for f in files:
        splits.setdefault("test" if "valid" in f.name.lower() else "train", []).extend(read_csv(f, tally, classes))
    return Converted(splits, root, [m for v in splits.values() for m in check_images(v, root)])


def read_csv(f: Path, tally: Tally, classes: int) -> list[dict]:
    samples = []
    with f.open(newline="", encoding="utf-8-sig") as fh:
        rows = csv.reader(fh)
        first = next(rows, [])
        has_header = bool(first) and first[0].strip() == HEADER[0]
        header = [h.strip() for h in first] if has_header else list(HEADER)
        if not {"subDirectory_filePath", "expression"} <= set(header):
            raise FacialR1Error(f"{f}:1: expected a header with subDirectory_filePath and expression, got {header[:4]}")
        path_at, expr_from_end = header.index(HEADER[0]), len(header) - header.index("expression")
        tally.notes.setdefault("affectnet_header_row", {})[f.name] = has_header
        body = rows if has_header else [first, *rows]
        for line, row in enumerate(body, start=2 if has_header else 1):
            if not any(cell.strip() for cell in row):
                continue
            tally.read()
            # counted from the end: a copy whose landmarks were split on ',' still finds the code
            code = row[-expr_from_end].strip() if len(row) >= len(header) else ""
            if not code.lstrip("-").isdigit() or int(code) not in {*LABEL_ORDERS["affectnet"], *NOT_EMOTIONS}:
                tally.drop("unreadable row (expression 0-10 in the 7th column)", f"{f}:{line}", ",".join(row[:7]),
                           bad=True)
            elif (sample := to_sample(row[path_at].strip(), int(code), tally, f"{f}:{line}", classes)) is not None:
                samples.append(sample)
    return samples


def convert_npy(src: Path, tally: Tally, classes: int) -> Converted:
    splits: dict[str, list[dict]] = {}
    for folder, split in (("train_set", "train"), ("val_set", "test")):
        for anno in sorted((src / folder / "annotations").glob("*_exp.npy")):
            tally.read()
            n = anno.name[:-len("_exp.npy")]
            try:
                code = int(float(str(np.load(anno, allow_pickle=False))))
            except (ValueError, OSError) as e:
                tally.drop("unreadable annotation (_exp.npy holding 0-10)", anno, e, bad=True)
                continue
            if code not in {*LABEL_ORDERS["affectnet"], *NOT_EMOTIONS}:
                tally.drop("unreadable annotation (_exp.npy holding 0-10)", anno, code, bad=True)
            elif (sample := to_sample(f"{folder}/images/{n}.jpg", code, tally, anno, classes,
                                      sid=f"affectnet-{folder}-{n}")) is not None:
                splits.setdefault(split, []).append(sample)
    if not tally.rows_read:
        raise FacialR1Error(f"{src}: no train_set/annotations/*_exp.npy or val_set/annotations/*_exp.npy")
    tally.notes["affectnet_layout"] = "train_set/val_set with annotations/<n>_exp.npy"
    return Converted(splits, src, [m for v in splits.values() for m in check_images(v, src)])


def to_sample(path: str, code: int, tally: Tally, where: object, classes: int, sid: str = "") -> dict | None:
    """The row's FEA sample, or None when its code is not one of the `classes` emotions (counted)."""
    if code in NOT_EMOTIONS:
        tally.drop(f"expression {code} ({NOT_EMOTIONS[code]}): not an emotion", where, path)
        return None
    if code >= classes:
        tally.drop("expression 7 (Contempt) with --classes 7", where, path)
        return None
    return fea_sample(sid or f"affectnet-{Path(path).stem}", "affectnet", path, None, [LABEL_ORDERS["affectnet"][code]],
                      {"expression_code": code})
