"""RAF-AU: RAFAU_label.txt, lines '<name>.jpg <AUs>' (4,601 in the release), AUs joined by '+'.
Aligned images are aligned/<name>_aligned.jpg (the original <name> is used when no aligned one
is found). Readers: CVI-SZU/ME-GraphAU OpenGraphAU/tool/dataset_process.py (`items[1].split('+')`,
skips 'null' lines and lines with none of its codes, `img_path.split('.')[0].zfill(4) +
'_aligned.jpg'`); the token forms below are those of a published copy of the real file
(arvindhvetri/EmotionAI RAFAU_label.txt, 4,601 lines).

Each token is [prefix]<number>[intensity letter]:
- plain FACS numbers (1 ... 43), kept;
- L/R (left/right side: L12, R14, R43), T/B (top/bottom lip: T24, B22, B28, T23), also combined
  (BL18, RB18) and in lower case (t23): the AU is kept, the side or lip is dropped and counted
  under `codes_normalised` ("T24 -> AU24");
- AD<n>, a FACS action descriptor (AD19, tongue show, the code the manual also numbers 19):
  kept as AU<n> and counted the same way;
- a trailing intensity letter A-E: dropped, counted.
Numbers the FACS manual lacks are dropped from their row and counted per file; head/eye codes
likewise. A token of no such form (L12L) makes its line unreadable: the line is dropped and
counted with examples, never guessed. 'null' lines (no AU coded) are dropped and counted, as the
public readers skip them; so is a line none of whose codes is a scored AU.
"""

from __future__ import annotations

import re
from pathlib import Path

from facial_r1.data.converters import Converted, Tally, check_images, fea_sample, note_dropped
from facial_r1.data.schema import ReadReport, normalize_aus
from facial_r1.errors import FacialR1Error

TOKEN = re.compile(r"^(AD|[LRTB]{0,2})0*(\d{1,2})([A-E]?)$", re.IGNORECASE)


def convert(src: Path, tally: Tally) -> Converted:
    label_file = src if src.is_file() else next(iter(sorted(src.glob("*label*.txt"))), None)
    if label_file is None:
        raise FacialR1Error(f"{src}: no RAF-AU label file (*label*.txt)")
    root = label_file.parent
    samples, report, dropped = [], ReadReport(str(label_file)), {}
    for line, text in enumerate(label_file.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        tally.read()
        where = f"{label_file}:{line}"
        parts = text.split()
        if len(parts) != 2:
            tally.drop("unreadable line (expected '<name>.jpg <AU+AU+...>')", where, text, bad=True)
            continue
        name, codes = parts
        if codes.lower() == "null":
            tally.drop("null: no AU coded (skipped, as the public readers do)", where, text)
            continue
        tokens = [(t, TOKEN.match(t)) for t in codes.split("+")]
        unreadable = [t for t, m in tokens if not m or int(m.group(2)) == 0]
        if unreadable:
            tally.drop("unreadable AU code (line dropped, not guessed)", where, unreadable[0], bad=True)
            continue
        for t, m in tokens:
            tally.normalise(t, f"AU{int(m.group(2))}")
        aus = normalize_aus([f"AU{int(m.group(2))}" for _, m in tokens], report)  # FACS lacks: dropped, counted
        if not aus:
            tally.drop("no scored FACS AU left on the line", where, text)
            continue
        samples.append(fea_sample(f"rafau-{Path(name).stem}", "rafau", image_of(root, name), aus, [], {"raw": codes}))
    note_dropped(dropped, label_file, report)
    return Converted({"all": samples}, root, check_images(samples, root), dropped)


def image_of(root: Path, name: str) -> str:
    stem = Path(name).stem
    for candidate in (f"aligned/{stem}_aligned.jpg", f"aligned/{stem.zfill(4)}_aligned.jpg", name):
        if (root / candidate).is_file():
            return candidate
    return f"aligned/{stem}_aligned.jpg"
