"""FEA-20K: the released annotations (QBiscuits/FEA-20K on the Hugging Face hub) are already FEA
JSONL, one file per source and split, with the fields of Facial-R1's README (`id, dataset,
image, question, AUs, labels, description, meta_info`), AU codes as "AU31" and emotions in noun
form ("anger", "happiness"). They are validated and normalised: every FACS code is kept
(AU8, AU19, AU30, AU31, AU33...), codes the manual lacks are dropped from their row and counted
per file in the report, emotion names become canonical. Images are relative to the file's folder.
"""

from __future__ import annotations

from pathlib import Path

from facial_r1.data.converters import Converted, check_images, note_dropped
from facial_r1.data.schema import ReadReport, read_jsonl
from facial_r1.errors import FacialR1Error


def convert(src: Path) -> Converted:
    files = [src] if src.is_file() else sorted(src.glob("*.jsonl"))
    if not files:
        raise FacialR1Error(f"{src}: no .jsonl files")
    splits, dropped = {}, {}
    for f in files:
        report = ReadReport(str(f))
        splits[f.stem] = read_jsonl(f, report=report)
        note_dropped(dropped, f, report)
    root = files[0].parent
    return Converted(splits, root, [m for v in splits.values() for m in check_images(v, root)], dropped)
