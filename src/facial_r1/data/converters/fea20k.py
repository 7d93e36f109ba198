"""FEA-20K: the released annotations (QBiscuits/FEA-20K on the Hugging Face hub) are already FEA
JSONL, one file per source and split, with the fields of Facial-R1's README (`id, dataset,
image, question, AUs, labels, description, meta_info`), AU codes as "AU31" and emotions in noun
form ("anger", "happiness"). They are validated and normalised: every FACS code is kept
(AU8, AU19, AU30, AU31, AU33...), spellings such as "L12" or "R14B" become "AU12"/"AU14" and are
counted, codes the manual lacks are dropped from their row and counted per file in the report,
emotion names become canonical. A line that fails validation (bad JSON, unknown field, duplicate
id) is dropped and counted. Images are relative to the file's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from facial_r1.data.converters import Converted, Tally, check_images, note_dropped
from facial_r1.data.schema import ReadReport, read_jsonl
from facial_r1.errors import FacialR1Error
from facial_r1.facs import parse_au_code


def convert(src: Path, tally: Tally) -> Converted:
    files = [src] if src.is_file() else sorted(src.glob("*.jsonl"))
    if not files:
        raise FacialR1Error(f"{src}: no .jsonl files")
    splits, dropped = {}, {}
    for f in files:
        report = ReadReport(str(f))
        splits[f.stem] = read_jsonl(f, skip_bad=not tally.strict, report=report)
        tally.read(report.n_lines)
        bad_lines = set()
        for error in report.errors:  # "FILE:LINE: what"
            where, what = error[len(str(f)) + 1:].split(": ", 1)
            bad_lines.add(int(where))
            tally.drop("line failing FEA validation", f"{f}:{where}", what)
        note_dropped(dropped, f, report)
        count_normalised(f, bad_lines, tally)
    root = files[0].parent
    return Converted(splits, root, [m for v in splits.values() for m in check_images(v, root)], dropped)


def count_normalised(f: Path, bad_lines: set, tally: Tally) -> None:
    """Count the AU spellings of the kept rows that normalisation rewrote ('L12' -> 'AU12')."""
    for line, text in enumerate(f.read_text(encoding="utf-8").split("\n"), start=1):  # as read_jsonl numbers them
        if line in bad_lines or not text.strip():
            continue
        raw = json.loads(text)
        if isinstance(raw.get("AUs"), list):
            for code in raw["AUs"]:  # validated by read_jsonl: every code parses
                tally.normalise(code, parse_au_code(code).code)
