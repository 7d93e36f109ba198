"""FER2013 (Kaggle, ICML 2013 challenge): 48x48 grey pixels become PNG files under `--out/images`.

The layouts users have, all read by column name (header names stripped, a UTF-8 BOM ignored):
- fer2013.csv: `emotion,pixels,Usage`, Usage Training / PublicTest / PrivateTest -> train / val /
  test (public Kaggle readers).
- icml_face_data.csv: the same rows with the header `emotion, Usage, pixels` (leading spaces,
  another order): pytorch/vision PR #8452 (torchvision/datasets/fer2013.py reads " pixels").
- train.csv `emotion,pixels` (all train) and test.csv `pixels` with no label column:
  lisa-lab/pylearn2 pylearn2/scripts/icml_2013_wrepl/emotions/emotions_dataset.py, pytorch/vision
  issue #8118 ("test.csv has no label column"). test.csv rows are written unlabelled (labels [])
  to `unlabelled.jsonl`, never mixed into a scored split.
`--input` is one of these files or the folder holding them; in a folder fer2013.csv wins, then
icml_face_data.csv, then train.csv + test.csv (torchvision's precedence, PR #8452). A row that
cannot be read (a code outside 0-6, not 2304 pixels, an unknown Usage, the trailing junk lines
some copies carry: isseu/emotion-recognition-neural-networks issue #19) is dropped and counted.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from facial_r1.data.converters import Converted, Tally, fea_sample
from facial_r1.errors import FacialR1Error
from facial_r1.facs import LABEL_ORDERS

SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
PRECEDENCE = (("fer2013.csv",), ("icml_face_data.csv",), ("train.csv", "test.csv"))


def convert(src: Path, tally: Tally, out: Path) -> Converted:
    files = [src] if src.is_file() else next(
        ([src / n for n in names if (src / n).is_file()] for names in PRECEDENCE
         if any((src / n).is_file() for n in names)), [])
    if not files:
        raise FacialR1Error(f"{src}: no fer2013.csv, icml_face_data.csv, train.csv or test.csv")
    (out / "images").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict]] = {}
    for f in files:
        read_file(f, tally, out, splits, tag="" if len(files) == 1 else f"{f.stem}-")
    tally.notes["fer2013_files"] = [f.name for f in files]
    return Converted(splits, out)


def read_file(f: Path, tally: Tally, out: Path, splits: dict, tag: str) -> None:
    with f.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if "pixels" not in header:
            raise FacialR1Error(f"{f}:1: expected a header naming a 'pixels' column, got {header[:4]}")
        col = {name: header.index(name) for name in ("emotion", "pixels", "Usage") if name in header}
        for i, row in enumerate(reader):
            line = i + 2
            if not any(cell.strip() for cell in row):
                continue
            tally.read()
            try:
                sample = to_sample(row, col, f"{tag}{i:05d}", out)
            except (KeyError, ValueError, IndexError, OverflowError) as e:
                tally.drop("unreadable row (emotion 0-6, 2304 pixels, a known Usage)", f"{f}:{line}", e, bad=True)
                continue
            usage = row[col["Usage"]].strip() if "Usage" in col else None
            split = SPLITS[usage] if usage else "train" if "emotion" in col else "unlabelled"
            splits.setdefault(split, []).append(sample)


def to_sample(row: list[str], col: dict, name: str, out: Path) -> dict:
    if len(row) != len(col):
        raise ValueError(f"{len(row)} fields, the header names {len(col)}")
    labels = [LABEL_ORDERS["fer2013"][int(row[col["emotion"]])]] if "emotion" in col else []
    usage = row[col["Usage"]].strip() if "Usage" in col else None
    if usage is not None and usage not in SPLITS:
        raise KeyError(f"Usage {usage!r}")
    pixels = np.array([int(v) for v in row[col["pixels"]].split()], dtype=np.uint8)
    if pixels.size != 48 * 48:
        raise ValueError(f"{pixels.size} pixel values")
    image = f"images/{name}.png"
    Image.fromarray(pixels.reshape(48, 48), "L").save(out / image)
    return fea_sample(f"fer2013-{name}", "fer2013", image, None, labels, {"usage": usage} if usage else {})
