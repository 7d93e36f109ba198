"""RAF-DB basic: EmoLabel/list_patition_label.txt ('train_00001.jpg 5', labels 1-7), as public
readers split it (yaoing/DAN rafdb.py: `pd.read_csv(..., sep=' ', header=None, names=['name','label'])`).

Images are looked up as Image/aligned/<name>_aligned.jpg, else Image/original/<name>.
`--input` is the RAF-DB basic folder (or the label file inside it). A line that is not
'<name> <label 1-7>' is dropped and counted.
"""

from __future__ import annotations

from pathlib import Path

from facial_r1.data.converters import Converted, Tally, fea_sample
from facial_r1.errors import FacialR1Error
from facial_r1.facs import LABEL_ORDERS


def convert(src: Path, tally: Tally) -> Converted:
    label_file = src if src.is_file() else src / "EmoLabel" / "list_patition_label.txt"
    if not label_file.is_file():
        raise FacialR1Error(f"{label_file}: no such file (the RAF-DB basic label list)")
    root = label_file.parent.parent if src.is_file() else src
    splits: dict[str, list[dict]] = {}
    missing = []
    for line, text in enumerate(label_file.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        tally.read()
        parts = text.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in LABEL_ORDERS["rafdb"]:
            tally.drop("unreadable line (expected '<name>.jpg <label 1-7>')", f"{label_file}:{line}", text, bad=True)
            continue
        name, label = parts[0], LABEL_ORDERS["rafdb"][int(parts[1])]
        stem = Path(name).stem
        aligned = f"Image/aligned/{stem}_aligned.jpg"
        image = aligned if (root / aligned).is_file() else f"Image/original/{name}"
        if not (root / image).is_file():
            missing.append(image)
        split = "train" if name.startswith("train") else "test"
        splits.setdefault(split, []).append(fea_sample(f"rafdb-{stem}", "rafdb", image, None, [label], {}))
    return Converted(splits, root, missing)
