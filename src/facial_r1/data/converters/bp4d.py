"""BP4D: AU occurrence CSVs AUCoding/AU_OCC/<F001>_<T1>.csv, one row per coded frame. The header
names the columns by number: the first ("0" in the release; "Frame" accepted) is the frame
number and column N holds AU N (1 = on, 0 = off, 9 = unknown), as public readers use them
(CVI-SZU/ME-GraphAU tool/BP4D_image_label_process.py reads usecols "0", "1", "2", "4", ...
with index_col=0; OpenGraphAU/tool/dataset_process.py reads AUs up to "39").

Rows keep every coded FACS AU that is on. A frame with a 9 in one of the 12 benchmark AUs is
dropped and counted (they are what the benchmark scores); a 9 in another AU is kept as unknown
(meta_info.unknown_aus), never as off. Columns of numbers the FACS manual lacks are dropped and
their "on" values counted per file. A row that cannot be read, or a file whose header lacks the
benchmark AU columns, is dropped and counted. Images are looked up at
<subject>/<task>/<frame>.jpg, else <frame:04d>.jpg (PyTorch-JAANet's lists name them
F001/T1/2440.jpg and M011/T1/0732.jpg), under the folder given (`--input`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from facial_r1.data.converters import Converted, Tally, check_images, fea_sample, note_dropped
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
        report = ReadReport(str(f))
        samples += read_file(f, src, tally, report)
        note_dropped(dropped, f, report)
    return Converted({"all": samples}, src, check_images(samples, src), dropped)


def read_file(f: Path, root: Path, tally: Tally, report: ReadReport) -> list[dict]:
    subject, task = f.stem.split("_", 1)
    with f.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    header = [h.strip() for h in rows[0]] if rows else []
    body = [(line, row) for line, row in enumerate(rows[1:], start=2) if any(cell.strip() for cell in row)]
    tally.read(len(body))
    codes = {i: parse_au_code(h) for i, h in enumerate(header) if i and h.isdigit()}
    cols = {c.code: i for i, c in codes.items()}
    if not header or header[0].lower() not in ("0", "frame") or any(au not in cols for au in AU_SUBSETS["bp4d"]):
        tally.drop("file without a '0,1,2,...' header naming the 12 benchmark AU columns", f"{f}:1",
                   ",".join(header[:6]), bad=True, n=len(body))
        return []
    samples = []
    for line, row in body:
        try:
            frame = int(row[0])
            values = {i: int(row[i]) for i in codes}
        except (ValueError, IndexError):
            values = {}
        if not values or any(v not in (0, 1, 9) for v in values.values()):
            tally.drop("unreadable row (an integer frame and 0/1/9 AU values)", f"{f}:{line}", ",".join(row[:6]),
                       bad=True)
            continue
        unknown = [header[i] for i, v in values.items() if v == 9]
        if any(values[cols[au]] == 9 for au in AU_SUBSETS["bp4d"]):
            tally.drop("a 9 (unknown) in a benchmark AU", f"{f}:{line}", ",".join(row[:6]))
            continue
        aus = normalize_aus([header[i] for i, v in values.items() if v == 1], report)
        meta = {"subject": subject, "task": task, "frame": frame}
        if unknown:
            meta["unknown_aus"] = normalize_aus(unknown)
        samples.append(fea_sample(f"bp4d-{subject}-{task}-{frame:04d}", "bp4d", frame_image(root, subject, task, frame),
                                  aus, [], meta))
    return samples


def frame_image(root: Path, subject: str, task: str, frame: int) -> str:
    for name in (f"{frame}.jpg", f"{frame:04d}.jpg"):
        if (root / subject / task / name).is_file():
            return f"{subject}/{task}/{name}"
    return f"{subject}/{task}/{frame}.jpg"
