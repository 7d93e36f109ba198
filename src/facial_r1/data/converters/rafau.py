"""RAF-AU: RAFAU_label.txt, lines '<name>.jpg <AUs>' (4,601 in the release), AUs joined by '+',
each optionally prefixed L/R (side) or suffixed with an intensity letter ('L12+R14', '1+2+25'),
'null' for no AU; some lines end in extra whitespace. Aligned images are
aligned/<name>_aligned.jpg. As public readers use them: CVI-SZU/ME-GraphAU
OpenGraphAU/tool/dataset_process.py (`items[1].split('+')`, 'null', tokens '1'...'39' and
'L1'...'R14', `img_path.split('.')[0].zfill(4) + '_aligned.jpg'`).

Codes the FACS manual lacks are dropped from their row and counted; a malformed token is an
error naming FILE:LINE. The original image (<name>) is used when no aligned one is found.
"""

from __future__ import annotations

from pathlib import Path

from facial_r1.data.converters import Converted, Tally, check_images, fea_sample, note_dropped, row_error
from facial_r1.data.schema import ReadReport, normalize_aus
from facial_r1.errors import FacialR1Error
from facial_r1.facs import parse_au_code


def convert(src: Path, tally: Tally) -> Converted:
    label_file = src if src.is_file() else next(iter(sorted(src.glob("*label*.txt"))), None)
    if label_file is None:
        raise FacialR1Error(f"{src}: no RAF-AU label file (*label*.txt)")
    root = label_file.parent
    samples, report, dropped = [], ReadReport(str(label_file)), {}
    for line, text in enumerate(label_file.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        parts = text.split()
        if len(parts) != 2:
            raise row_error(label_file, line, "'<name>.jpg <AU+AU+...>'", text)
        name, codes = parts
        tokens = [] if codes.lower() == "null" else codes.split("+")
        try:
            aus = normalize_aus(tokens, report)  # codes FACS lacks: dropped, counted in the report
        except FacialR1Error:
            raise row_error(label_file, line, "AU codes like 12, L12 or 12B", next(filter(malformed, tokens))) from None
        samples.append(fea_sample(f"rafau-{Path(name).stem}", "rafau", image_of(root, name), aus, [],
                                  {"raw": codes}))
    tally.read(len(samples))  # every line is written, or raises
    note_dropped(dropped, label_file, report)
    return Converted({"all": samples}, root, check_images(samples, root), dropped)


def image_of(root: Path, name: str) -> str:
    stem = Path(name).stem
    for candidate in (f"aligned/{stem}_aligned.jpg", f"aligned/{stem.zfill(4)}_aligned.jpg", name):
        if (root / candidate).is_file():
            return candidate
    return f"aligned/{stem}_aligned.jpg"


def malformed(token: str) -> bool:
    try:
        parse_au_code(token)
    except FacialR1Error:
        return True
    return False
