"""FER2013: fer2013.csv (emotion,pixels,Usage); 48x48 grey pixels become PNG files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from facial_r1.data.converters import Converted, Tally, fea_sample, row_error
from facial_r1.facs import LABEL_ORDERS

SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def convert(src: Path, tally: Tally, out: Path) -> Converted:
    splits: dict[str, list[dict]] = {}
    (out / "images").mkdir(parents=True, exist_ok=True)
    with src.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"emotion", "pixels", "Usage"} <= set(reader.fieldnames or []):
            raise row_error(src, 1, "header emotion,pixels,Usage", reader.fieldnames)
        for i, row in enumerate(reader):
            line = i + 2
            try:
                label = LABEL_ORDERS["fer2013"][int(row["emotion"])]
                pixels = np.array([int(v) for v in row["pixels"].split()], dtype=np.uint8)
                split = SPLITS[row["Usage"]]
            except (KeyError, ValueError) as e:
                raise row_error(src, line, "emotion 0-6, 2304 pixels and a known Usage", e) from None
            if pixels.size != 48 * 48:
                raise row_error(src, line, "2304 pixel values", f"{pixels.size} values")
            image = f"images/{i:05d}.png"
            Image.fromarray(pixels.reshape(48, 48), "L").save(out / image)
            splits.setdefault(split, []).append(
                fea_sample(f"fer2013-{i:05d}", "fer2013", image, None, [label], {"usage": row["Usage"]}))
    tally.read(sum(map(len, splits.values())))  # every row is written, or a bad one raises
    return Converted(splits, out)
