"""DISFA: ActionUnit_Labels/<SN001>/<SN001>_au<N>.txt, one file per AU (the release codes 12:
1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26), lines 'frame,intensity' with frames counted from 1
and intensity 0-5 (CVI-SZU/ME-GraphAU tool/DISFA_image_label_process.py:
`frameIdx, AUIntensity = lines.split(',')`).

An AU occurs when its intensity is >= `threshold` (--intensity-threshold, default 2: the 8-AU
benchmark's rule, ME-GraphAU tool/DISFA_image_label_process.py `if AUIntensity >= 2`; its
OpenGraphAU/tool/dataset_process.py uses >= 1).

DISFA ships videos, so users extract frames themselves, into <subject>/<n>.png or .jpg under the
folder given (`--input`) or its img/ subfolder. The public tools number them from 0: ME-GraphAU
pairs label line t (frame t+1) with SN001/t.png (data/DISFA/img/SN001/0.png),
ZhiwenShao/PyTorch-JAANet lists DISFA/SN002/0.jpg. The numbering on disk is detected per subject:
image 0 exists only when frames are numbered from 0, and the numbering that leaves the fewest
images without a label frame wins; `frame_offset` (--frame-offset: -1 = numbered from 0, 0 =
from 1) forces it. Images matching neither numbering are an error naming examples. The report
says which numbering was found.

A label frame every AU file has becomes a row. A frame lacking the label of a benchmark AU (its
line missing, unreadable, or the whole file absent) is dropped and counted; one lacking only
other AUs is kept with those AUs in meta_info.unknown_aus, never as "off". A missing label file
of any of the 12 coded AUs is reported (and is an error with --strict).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from facial_r1.data.converters import EXAMPLES, Converted, Tally, check_images, fea_sample
from facial_r1.errors import FacialR1Error
from facial_r1.facs import AU_SUBSETS, sort_aus

CODED = tuple(f"AU{n}" for n in (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NUMBERING = {-1: "numbered from 0 (image n holds label frame n+1)", 0: "numbered from 1 (image n holds label frame n)"}


def convert(src: Path, tally: Tally, frame_offset: int | None = None, threshold: int = 2) -> Converted:
    if not 1 <= threshold <= 5:
        raise FacialR1Error(f"--intensity-threshold {threshold}: DISFA intensities are 0-5")
    if frame_offset not in (None, -1, 0):
        raise FacialR1Error(f"--frame-offset {frame_offset}: -1 (frames numbered from 0) or 0 (from 1)")
    labels = src / "ActionUnit_Labels" if (src / "ActionUnit_Labels").is_dir() else src
    subjects = sorted(p for p in labels.iterdir() if p.is_dir() and any(p.glob(f"{p.name}_au*.txt")))
    if not subjects:
        raise FacialR1Error(f"{labels}: no subject folders (expected ActionUnit_Labels/SN001/SN001_au1.txt ...)")
    notes = {"intensity_threshold": threshold, "missing_label_files": {}, "unreadable_lines": {"n": 0, "examples": []}}
    frames = {s.name: read_labels(s, tally, notes) for s in subjects}
    root = image_root(src, list(frames))
    images = {s: index_images(root / s) for s in frames}
    offsets, how = choose_offsets(frames, images, frame_offset)
    notes["frame_numbering"] = {h: [s for s in how if how[s] == h] for h in dict.fromkeys(how.values())}
    found = Counter(Path(name).suffix for imgs in images.values() for name in imgs.values())
    notes["image_suffixes"] = dict(found)
    samples = []
    for subject, by_frame in frames.items():
        suffix = Counter(Path(n).suffix for n in images[subject].values()).most_common(1) or found.most_common(1)
        suffix = suffix[0][0] if suffix else ".jpg"
        for frame, intensity in sorted(by_frame.items()):
            tally.read()
            lacking = [au for au in CODED if au not in intensity]
            if any(au in AU_SUBSETS["disfa"] for au in lacking):
                tally.drop("frame without the label of a benchmark AU", f"{subject} frame {frame}",
                           "no label for " + ",".join(lacking), bad=True)
                continue
            meta = {"subject": subject, "frame": frame, "intensity": intensity}
            if lacking:
                meta["unknown_aus"] = lacking
            image = images[subject].get(frame + offsets[subject], f"{subject}/{frame + offsets[subject]}{suffix}")
            samples.append(fea_sample(f"disfa-{subject}-{frame:05d}", "disfa", image,
                                      sort_aus(au for au, v in intensity.items() if v >= threshold), [], meta))
    notes["kept_with_unknown_aus"] = sum("unknown_aus" in s["meta_info"] for s in samples)
    tally.notes["disfa"] = notes
    return Converted({"all": samples}, root, check_images(samples, root))


def read_labels(subject: Path, tally: Tally, notes: dict) -> dict[int, dict[str, int]]:
    """frame -> {AU: intensity} over the subject's label files; a missing file is reported."""
    files = {f"AU{int(m.group(1))}": f for f in subject.glob(f"{subject.name}_au*.txt")
             if (m := re.fullmatch(rf"{re.escape(subject.name)}_au(\d+)\.txt", f.name))}
    missing = [au for au in CODED if au not in files]
    if missing:
        if tally.strict:
            raise FacialR1Error(f"{subject}: missing label file(s) for {missing} (--strict)")
        notes["missing_label_files"][subject.name] = missing
    frames: dict[int, dict[str, int]] = {}
    for au, f in sorted(files.items()):
        for line, text in enumerate(f.read_text().splitlines(), start=1):
            if not text.strip():
                continue
            parts = text.replace(" ", "").split(",")
            if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[1]) > 5:
                if tally.strict:
                    raise FacialR1Error(f"{f}:{line}: expected 'frame,intensity' with intensity 0-5, got {text[:80]!r}")
                unreadable = notes["unreadable_lines"]
                unreadable["n"] += 1
                if len(unreadable["examples"]) < EXAMPLES:
                    unreadable["examples"].append(f"{f}:{line}: {text[:80]!r}")
                continue
            frames.setdefault(int(parts[0]), {})[au] = int(parts[1])
    return frames


def image_root(src: Path, subjects: list[str]) -> Path:
    """The folder holding <subject>/ frame folders: --input itself, or its img/ (ME-GraphAU's data/DISFA/img)."""
    for folder in (src, src / "img", src / "images", src / "frames"):
        if any((folder / s).is_dir() for s in subjects):
            return folder
    return src


def index_images(folder: Path) -> dict[int, str]:
    """Frame number -> '<subject>/<file>' for the images named by a number ('0.png', '00001.jpg', 'frame_12.png')."""
    if not folder.is_dir():
        return {}
    found, unnumbered = {}, []
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() in IMAGE_SUFFIXES:
            m = re.search(r"(\d+)$", f.stem)
            if m:
                found.setdefault(int(m.group(1)), f"{folder.name}/{f.name}")
            else:
                unnumbered.append(f"{folder.name}/{f.name}")
    if unnumbered and len(unnumbered) >= len(found):
        raise FacialR1Error(f"{folder}: frame images not named by a number (e.g. {unnumbered[:3]}); "
                            "expected <n>.png or <n>.jpg")
    return found


def choose_offsets(frames: dict, images: dict, forced: int | None) -> tuple[dict[str, int], dict[str, str]]:
    """Per subject, image number - label frame and how it was decided: detected, forced or assumed."""
    if forced is not None:
        return dict.fromkeys(frames, forced), dict.fromkeys(frames, f"{NUMBERING[forced]} (--frame-offset)")
    found = {s: detect_offset(s, set(frames[s]), images[s]) for s in frames}
    decided = Counter(o for o in found.values() if o is not None)
    undecided = [s for s, o in found.items() if o is None and images[s]]
    if undecided and not decided:
        raise FacialR1Error(f"frames of {undecided[:3]} fit both numberings (no image 0, no last frame); "
                            "pass --frame-offset -1 (numbered from 0) or 0 (numbered from 1)")
    fallback = decided.most_common(1)[0][0] if decided else 0
    offsets = {s: fallback if o is None else o for s, o in found.items()}
    how = {s: NUMBERING[o] if o is not None else f"{NUMBERING[fallback]} (as the other subjects)" if images[s]
           else f"no frame images found (paths assume {NUMBERING[fallback]})" for s, o in found.items()}
    return offsets, how


def detect_offset(subject: str, label_frames: set[int], images: dict[int, str]) -> int | None:
    """-1 or 0, whichever leaves fewer images without a label frame; None when nothing decides."""
    if not images:
        return None
    unmatched = {o: sorted(images.keys() - {f + o for f in label_frames}) for o in (-1, 0)}
    best = min(len(u) for u in unmatched.values())
    if best > len(images) / 2:
        first = min(label_frames)
        raise FacialR1Error(f"{subject}: the frame images match neither numbering: e.g. "
                            f"{[images[n] for n in unmatched[-1][:3]]} pair with no label frame; label frame {first} "
                            f"should be {subject}/{first - 1}.png (numbered from 0) or {subject}/{first}.png (from 1)")
    candidates = [o for o in (-1, 0) if len(unmatched[o]) == best]
    if len(candidates) == 2 and 0 in images:  # no label frame 0: only tools counting from 0 write image 0
        candidates = [-1]
    return candidates[0] if len(candidates) == 1 else None
