"""RAF-AU: the label text file, lines '<name>.jpg <AUs>' with AUs joined by '+', each
optionally prefixed L/R (side) or suffixed with an intensity letter ('L12+R14', '1+2+25').
Unknown AU numbers are an error; `null` means no AU. Images are aligned/<name> or <name>.
"""

from __future__ import annotations

import re
from pathlib import Path

from facial_r1.data.converters import Converted, check_images, fea_sample, row_error
from facial_r1.errors import FacialR1Error
from facial_r1.facs import sort_aus, try_normalize_au

_AU = re.compile(r"^[LRB]?(\d{1,2})[A-E]?$", re.IGNORECASE)


def convert(src: Path) -> Converted:
    label_file = src if src.is_file() else next(iter(sorted(src.glob("*label*.txt"))), None)
    if label_file is None:
        raise FacialR1Error(f"{src}: no RAF-AU label file (*label*.txt)")
    root = label_file.parent
    samples = []
    for line, text in enumerate(label_file.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        parts = text.split()
        if len(parts) != 2:
            raise row_error(label_file, line, "'<name>.jpg <AU+AU+...>'", text)
        name, codes = parts
        aus = []
        for code in ([] if codes.lower() == "null" else codes.split("+")):
            m = _AU.match(code)
            au = try_normalize_au(m.group(1)) if m else None
            if au is None:
                raise row_error(label_file, line, "AU codes like 12, L12 or 12B", code)
            aus.append(au)
        image = f"aligned/{name}" if (root / "aligned" / name).is_file() else name
        samples.append(fea_sample(f"rafau-{Path(name).stem}", "rafau", image, sort_aus(aus), [], {"raw": codes}))
    return Converted({"all": samples}, root, check_images(samples, root))
