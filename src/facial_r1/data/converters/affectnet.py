"""AffectNet: Manually_Annotated_file_lists/training.csv and validation.csv, with the header
subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal
(facial_landmarks is one ';'-joined field), as public readers split it; the images are under
Manually_Annotated/Manually_Annotated_Images/ (or Manually_Annotated_Images/) of the data set's
folder, the parent of the file lists.

Expression codes 0-7 map to emotions (0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust,
6 Anger, 7 Contempt); 8 None, 9 Uncertain and 10 No-Face are dropped, and with 7 classes so is
7 Contempt. The validation list is the literature's test set.
"""

from __future__ import annotations

import csv
from pathlib import Path

from facial_r1.data.converters import Converted, Tally, check_images, fea_sample, row_error
from facial_r1.errors import FacialR1Error
from facial_r1.facs import LABEL_ORDERS


def convert(src: Path, tally: Tally, classes: int = 8) -> Converted:
    if classes not in (7, 8):
        raise FacialR1Error(f"AffectNet has 7 or 8 classes, not {classes}")
    if src.is_dir():
        raise FacialR1Error(f"{src}: give the AffectNet CSV file (training.csv or validation.csv)")
    base = src.parent.parent if src.parent.name == "Manually_Annotated_file_lists" else src.parent
    candidates = [base / "Manually_Annotated" / "Manually_Annotated_Images", base / "Manually_Annotated_Images",
                  src.parent / "Manually_Annotated_Images"]
    root = next((c for c in candidates if c.is_dir()), candidates[0])
    split = "test" if "valid" in src.name.lower() else "train"
    samples = []
    with src.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"subDirectory_filePath", "expression"} <= set(reader.fieldnames or []):
            raise row_error(src, 1, "header with subDirectory_filePath and expression", reader.fieldnames)
        for line, row in enumerate(reader, start=2):
            tally.read()
            try:
                code = int(row["expression"])
            except ValueError:
                raise row_error(src, line, "an integer expression code", row["expression"]) from None
            if code not in LABEL_ORDERS["affectnet"] and code not in (8, 9, 10):
                raise row_error(src, line, "expression 0-10", code)
            if code >= classes:  # 8 None, 9 Uncertain, 10 No-Face; 7 Contempt with 7 classes
                tally.drop(f"expression {code} ({'Contempt' if code == 7 else 'None, Uncertain or No-Face'})",
                           f"{src}:{line}", row["subDirectory_filePath"])
                continue
            path = row["subDirectory_filePath"]
            samples.append(fea_sample(f"affectnet-{Path(path).stem}", "affectnet", path,
                                      None, [LABEL_ORDERS["affectnet"][code]], {"expression_code": code}))
    return Converted({split: samples}, root, check_images(samples, root))
