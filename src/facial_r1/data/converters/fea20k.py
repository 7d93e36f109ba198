"""FEA-20K: the published annotations are already FEA JSONL; validate and normalise them
(AU names, emotion labels, duplicate ids). Images are relative to the file's folder."""

from __future__ import annotations

from pathlib import Path

from facial_r1.data.converters import Converted, check_images
from facial_r1.data.schema import read_jsonl
from facial_r1.errors import FacialR1Error


def convert(src: Path) -> Converted:
    files = [src] if src.is_file() else sorted(src.glob("*.jsonl"))
    if not files:
        raise FacialR1Error(f"{src}: no .jsonl files")
    splits = {f.stem: read_jsonl(f) for f in files}
    root = files[0].parent
    return Converted(splits, root, [m for v in splits.values() for m in check_images(v, root)])
