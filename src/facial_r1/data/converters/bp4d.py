"""BP4D: AU occurrence CSVs AUCoding/AU_OCC/<F001>_<T1>.csv ('Frame,1,2,4,...'; 1 = on,
0 = off, 9 = unknown). The 12 standard AUs; a frame whose 12 AUs include an unknown is dropped.
Images are expected at <subject>/<task>/<frame>.jpg under the folder given (`--input`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from facial_r1.data.converters import Converted, check_images, fea_sample, row_error
from facial_r1.errors import FacialR1Error
from facial_r1.facs import AU_SUBSETS


def convert(src: Path) -> Converted:
    occ = src / "AUCoding" / "AU_OCC"
    occ = occ if occ.is_dir() else src
    files = sorted(occ.glob("*_*.csv"))
    if not files:
        raise FacialR1Error(f"{occ}: no <subject>_<task>.csv files")
    samples = []
    for f in files:
        subject, task = f.stem.split("_", 1)
        with f.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            cols = {f"AU{h.strip()}": i for i, h in enumerate(header) if h.strip().isdigit()}
            missing = [au for au in AU_SUBSETS["bp4d"] if au not in cols]
            if not header or header[0].strip().lower() != "frame" or missing:
                raise row_error(f, 1, f"header 'Frame,1,2,...' with {AU_SUBSETS['bp4d']}", header[:6])
            for line, row in enumerate(reader, start=2):
                try:
                    frame = int(row[0])
                    values = {au: int(row[cols[au]]) for au in AU_SUBSETS["bp4d"]}
                except (ValueError, IndexError):
                    raise row_error(f, line, "integer frame and 0/1/9 AU values", ",".join(row[:6])) from None
                if any(v not in (0, 1, 9) for v in values.values()):
                    raise row_error(f, line, "AU values 0, 1 or 9", ",".join(row[:6]))
                if 9 in values.values():
                    continue
                aus = [au for au, v in values.items() if v == 1]
                samples.append(fea_sample(f"bp4d-{subject}-{task}-{frame:04d}", "bp4d", f"{subject}/{task}/{frame}.jpg",
                                          aus, [], {"subject": subject, "task": task, "frame": frame}))
    return Converted({"all": samples}, src, check_images(samples, src))
