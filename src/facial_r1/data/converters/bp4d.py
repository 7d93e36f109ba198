"""BP4D: AU occurrence CSVs AUCoding/AU_OCC/<F001>_<T1>.csv, one row per coded frame. The header
names the columns by number: the first ("0" in the release; "Frame" accepted) is the frame
number and column N holds AU N (1 = on, 0 = off, 9 = unknown), as public readers use them
(CVI-SZU/ME-GraphAU tool/BP4D_image_label_process.py reads usecols "0", "1", "2", "4", ...
with index_col=0; OpenGraphAU/tool/dataset_process.py reads AUs up to "39" and maps 9 to
unknown). Rows keep every coded FACS AU that is on; a frame whose 12 standard AUs include an
unknown is dropped (they are what the benchmark scores). Columns of numbers the FACS manual
lacks are dropped and their "on" values counted per file. Images are looked up at
<subject>/<task>/<frame>.jpg, else <frame:04d>.jpg, under the folder given (`--input`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from facial_r1.data.converters import Converted, Tally, check_images, fea_sample, note_dropped, row_error
from facial_r1.data.schema import ReadReport, normalize_aus
from facial_r1.errors import FacialR1Error
from facial_r1.facs import AU_SUBSETS, parse_au_code


def convert(src: Path, tally: Tally) -> Converted:
    occ = src / "AUCoding" / "AU_OCC"
    occ = occ if occ.is_dir() else src
    files = sorted(occ.glob("*_*.csv"))
    if not files:
        raise FacialR1Error(f"{occ}: no <subject>_<task>.csv files")
    samples, dropped = [], {}
    for f in files:
        subject, task = f.stem.split("_", 1)
        report = ReadReport(str(f))
        with f.open(newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            codes = {i: parse_au_code(h) for i, h in enumerate(header) if i and h.isdigit()}
            cols = {c.code: i for i, c in codes.items()}
            missing = [au for au in AU_SUBSETS["bp4d"] if au not in cols]
            if not header or header[0].lower() not in ("0", "frame") or missing:
                raise row_error(f, 1, f"a header '0,1,2,...' naming the frame and AU columns, with {AU_SUBSETS['bp4d']}",
                                ",".join(header[:6]))
            for line, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                tally.read()
                try:
                    frame = int(row[0])
                    values = {i: int(row[i]) for i in codes}
                except (ValueError, IndexError):
                    raise row_error(f, line, "an integer frame and 0/1/9 AU values", ",".join(row[:6])) from None
                bad = [header[i] for i, v in values.items() if v not in (0, 1, 9)]
                if bad:
                    raise row_error(f, line, "AU values 0, 1 or 9", f"column(s) {bad}")
                if any(values[cols[au]] == 9 for au in AU_SUBSETS["bp4d"]):
                    tally.drop("a 9 (unknown) in a benchmark AU", f"{f}:{line}", ",".join(row[:6]))
                    continue
                aus = normalize_aus([header[i] for i, v in values.items() if v == 1], report)
                samples.append(fea_sample(f"bp4d-{subject}-{task}-{frame:04d}", "bp4d", frame_image(src, subject, task, frame),
                                          aus, [], {"subject": subject, "task": task, "frame": frame}))
        note_dropped(dropped, f, report)
    return Converted({"all": samples}, src, check_images(samples, src), dropped)


def frame_image(root: Path, subject: str, task: str, frame: int) -> str:
    for name in (f"{frame}.jpg", f"{frame:04d}.jpg"):
        if (root / subject / task / name).is_file():
            return f"{subject}/{task}/{name}"
    return f"{subject}/{task}/{frame}.jpg"
