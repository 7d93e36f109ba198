"""RAF-DB basic, in the two layouts users have.

1. The release: EmoLabel/list_patition_label.txt ('train_00001.jpg 5', labels 1-7), as public
   readers split it (yaoing/DAN rafdb.py: `pd.read_csv(..., sep=' ', header=None,
   names=['name','label'])`). Images are looked up as Image/aligned/<name>_aligned.jpg, else
   Image/original/<name>. A line that is not '<name> <label 1-7>' is dropped and counted.
2. A folder per label, as copies re-packed for image-folder loaders have it: train_set/ and
   val_set/ (or train/ and test/, also under DATASET/), each with 1/ ... 7/ in the release's label
   order (1 Surprise ... 7 Neutral): the layout a README of the code index spells out
   ("rafdb/train_set/1/  # Surprise class ... 7/  # Neutral class"; the index did not name its
   repository). val_set/ or test/ is the test split. An image in a folder that is not 1-7 is
   dropped and counted.
`--input` is the RAF-DB basic folder (or the label file inside it), or the folder-per-label root.
"""

from __future__ import annotations

from pathlib import Path

from facial_r1.data.converters import Converted, Tally, fea_sample
from facial_r1.errors import FacialR1Error
from facial_r1.facs import LABEL_ORDERS


SPLIT_FOLDERS = {"train_set": "train", "train": "train", "val_set": "test", "test": "test", "val": "test"}
IMAGES = (".jpg", ".jpeg", ".png")


def convert(src: Path, tally: Tally) -> Converted:
    label_file = src if src.is_file() else src / "EmoLabel" / "list_patition_label.txt"
    if not label_file.is_file():
        folders = _label_folders(src) if src.is_dir() else None
        if folders:
            return _from_folders(*folders, tally)
        raise FacialR1Error(f"{label_file}: no such file (the RAF-DB basic label list), and no train_set/ or train/ "
                            f"with label folders 1-7 under {src}")
    tally.notes["rafdb_layout"] = "EmoLabel/list_patition_label.txt"
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


def _label_folders(src: Path) -> tuple[Path, list[Path]] | None:
    """(root, split folders) of a folder-per-label copy: train_set/1 ... under src or src/DATASET."""
    for root in (src, src / "DATASET"):
        splits = [root / name for name in SPLIT_FOLDERS if (root / name).is_dir()]
        if any((split / str(k)).is_dir() for split in splits for k in range(1, 8)):
            return root, splits
    return None


def _from_folders(root: Path, split_dirs: list[Path], tally: Tally) -> Converted:
    tally.notes["rafdb_layout"] = f"a folder per label: {', '.join(d.name for d in split_dirs)} with 1-7"
    splits: dict[str, list[dict]] = {}
    for split_dir in split_dirs:
        split = SPLIT_FOLDERS[split_dir.name]
        for image in sorted(p for p in split_dir.rglob("*") if p.suffix.lower() in IMAGES and p.is_file()):
            tally.read()
            folder = image.parent.name
            if image.parent.parent != split_dir or not folder.isdigit() or int(folder) not in LABEL_ORDERS["rafdb"]:
                tally.drop("image outside the label folders 1-7", image.relative_to(root), bad=True)
                continue
            rel = image.relative_to(root).as_posix()
            sid = f"rafdb-{split_dir.name}-{folder}-{image.stem}"
            splits.setdefault(split, []).append(
                fea_sample(sid, "rafdb", rel, None, [LABEL_ORDERS["rafdb"][int(folder)]], {}))
    return Converted(splits, root, [])
