"""DISFA: ActionUnit_Labels/<SN001>/<SN001>_au<N>.txt, one file per AU (the release codes 12:
1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26), lines 'frame,intensity' with intensity 0-5, as
public readers parse them (CVI-SZU/ME-GraphAU OpenGraphAU/tool/dataset_process.py:
`frameIdx, AUIntensity = lines.split(',')`).

An AU occurs when its intensity is >= 2 (the literature's protocol). Every AU file present is
read; the 8 standard AUs must be there. Images are the extracted video frames, expected at
<subject>/<frame>.jpg (or .png) under the folder given (`--input`); DISFA ships videos, so
frames must be extracted first, named by the label files' frame numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

from facial_r1.data.converters import Converted, Tally, check_images, fea_sample, row_error
from facial_r1.errors import FacialR1Error
from facial_r1.facs import AU_SUBSETS, sort_aus

THRESHOLD = 2


def convert(src: Path, tally: Tally) -> Converted:
    labels = src / "ActionUnit_Labels" if (src / "ActionUnit_Labels").is_dir() else src
    subjects = sorted(p for p in labels.iterdir() if p.is_dir())
    if not subjects:
        raise FacialR1Error(f"{labels}: no subject folders (expected ActionUnit_Labels/SN001/SN001_au1.txt ...)")
    samples = []
    for subject in subjects:
        files = {f"AU{int(m.group(1))}": f for f in subject.glob(f"{subject.name}_au*.txt")
                 if (m := re.fullmatch(rf"{re.escape(subject.name)}_au(\d+)\.txt", f.name))}
        missing = [au for au in AU_SUBSETS["disfa"] if au not in files]
        if missing:
            raise FacialR1Error(f"{subject}: missing label file(s) for {missing}")
        frames: dict[int, dict[str, int]] = {}
        for au, f in sorted(files.items()):
            for line, text in enumerate(f.read_text().splitlines(), start=1):
                if not text.strip():
                    continue
                parts = text.replace(" ", "").split(",")
                if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[1]) > 5:
                    raise row_error(f, line, "'frame,intensity' with intensity 0-5", text)
                frames.setdefault(int(parts[0]), {})[au] = int(parts[1])
        for frame, intensity in sorted(frames.items()):
            aus = sort_aus(au for au, v in intensity.items() if v >= THRESHOLD)
            image = f"{subject.name}/{frame}.png" if (src / subject.name / f"{frame}.png").is_file() else f"{subject.name}/{frame}.jpg"
            samples.append(fea_sample(f"disfa-{subject.name}-{frame:05d}", "disfa", image,
                                      aus, [], {"subject": subject.name, "frame": frame, "intensity": intensity}))
    tally.read(len(samples))  # every frame is written, or a bad line raises
    return Converted({"all": samples}, src, check_images(samples, src))
