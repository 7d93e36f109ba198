"""AffectNet: training.csv / validation.csv (subDirectory_filePath, ..., expression, ...).

Expression codes 0-7 map to emotions; 8 None, 9 Uncertain and 10 No-Face are dropped, and
with 7 classes so is 7 Contempt. Images are relative to Manually_Annotated_Images/, the
folder beside the CSV (pass it as --image-folders).
"""

from __future__ import annotations

import csv
from pathlib import Path

from facial_r1.data.converters import Converted, check_images, fea_sample, row_error
from facial_r1.errors import FacialR1Error
from facial_r1.facs import LABEL_ORDERS


def convert(src: Path, classes: int = 8) -> Converted:
    if classes not in (7, 8):
        raise FacialR1Error(f"AffectNet has 7 or 8 classes, not {classes}")
    if src.is_dir():
        raise FacialR1Error(f"{src}: give the AffectNet CSV file (training.csv or validation.csv)")
    root = src.parent / "Manually_Annotated_Images"
    split = "test" if "valid" in src.name.lower() else "train"
    samples, dropped = [], 0
    with src.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"subDirectory_filePath", "expression"} <= set(reader.fieldnames or []):
            raise row_error(src, 1, "header with subDirectory_filePath and expression", reader.fieldnames)
        for line, row in enumerate(reader, start=2):
            try:
                code = int(row["expression"])
            except ValueError:
                raise row_error(src, line, "an integer expression code", row["expression"]) from None
            if code not in LABEL_ORDERS["affectnet"] and code not in (8, 9, 10):
                raise row_error(src, line, "expression 0-10", code)
            if code >= classes:  # 8 None, 9 Uncertain, 10 No-Face; 7 Contempt with 7 classes
                dropped += 1
                continue
            path = row["subDirectory_filePath"]
            samples.append(fea_sample(f"affectnet-{Path(path).stem}", "affectnet", path,
                                      None, [LABEL_ORDERS["affectnet"][code]], {"expression_code": code}))
    return Converted({split: samples}, root, check_images(samples, root))
