"""DISFA: ActionUnit_Labels/<SN001>/<SN001>_au<N>.txt, lines 'frame,intensity' (0-5).

An AU occurs when its intensity is >= 2 (the literature's protocol); the 8 standard AUs.
Images are the extracted video frames, expected at <subject>/<frame>.jpg under the folder
given (`--input`); DISFA ships videos, so frames must be extracted first.
"""

from __future__ import annotations

from pathlib import Path

from facial_r1.data.converters import Converted, check_images, fea_sample, row_error
from facial_r1.errors import FacialR1Error
from facial_r1.facs import AU_SUBSETS

THRESHOLD = 2


def convert(src: Path) -> Converted:
    labels = src / "ActionUnit_Labels" if (src / "ActionUnit_Labels").is_dir() else src
    subjects = sorted(p for p in labels.iterdir() if p.is_dir())
    if not subjects:
        raise FacialR1Error(f"{labels}: no subject folders (expected ActionUnit_Labels/SN001/SN001_au1.txt ...)")
    samples = []
    for subject in subjects:
        frames: dict[int, dict[str, int]] = {}
        for au in AU_SUBSETS["disfa"]:
            f = subject / f"{subject.name}_au{au[2:]}.txt"
            if not f.is_file():
                raise FacialR1Error(f"{f}: missing label file for {au}")
            for line, text in enumerate(f.read_text().splitlines(), start=1):
                if not text.strip():
                    continue
                parts = text.replace(" ", "").split(",")
                if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[1]) > 5:
                    raise row_error(f, line, "'frame,intensity' with intensity 0-5", text)
                frames.setdefault(int(parts[0]), {})[au] = int(parts[1])
        for frame, intensity in sorted(frames.items()):
            aus = [au for au in AU_SUBSETS["disfa"] if intensity.get(au, 0) >= THRESHOLD]
            samples.append(fea_sample(f"disfa-{subject.name}-{frame:05d}", "disfa", f"{subject.name}/{frame}.jpg",
                                      aus, [], {"subject": subject.name, "frame": frame, "intensity": intensity}))
    return Converted({"all": samples}, src, check_images(samples, src))
