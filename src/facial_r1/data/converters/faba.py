"""FABA-Instruct (EmoLA, ECCV 2024): the release's FABAInstruct/{train,eval}/{train,eval}_{au,emotion}_anno.json,
each a JSON list of LLaVA-style records {"source", "image", "id", "conversations":
[{"from": "human", "value": "...\\n<image>"}, {"from": "gpt", "value": ...}], "landmark"},
with `image` relative to the folder that holds FABAInstruct/ ("FABAInstruct/train/images/...").
Layout and keys as the EmoLA README (github.com/JackYFL/EmoLA) documents them.

`--input` is one annotation file or the FABAInstruct folder (then train_* files become the
train split and eval_* files the test split). The gpt answer becomes `description` (the
reference for ROUGE-L). The task comes from the file name (`*_au_anno` / `*_emotion_anno`), else
from the question. AU records take the AUs their answer names ("1. AU4 - Brow Lowerer: ...");
explicit "AU"/"AUs" fields win when present. The release has no emotion-label field: an
emotion record's label is an explicit "emotion"/"label" field when present, else the one
emotion its answer names (meta_info.label_source = "answer"); an answer naming none or several
("neither joy nor sadness") gets no label. Ids are prefixed with the task, since the release
reuses an image's id in both tasks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from facial_r1.data.converters import Converted, Tally, check_images, fea_sample
from facial_r1.errors import FacialR1Error
from facial_r1.facs import sort_aus, try_normalize_au, try_normalize_emotion
from facial_r1.parse import cited_aus


def convert(src: Path, tally: Tally) -> Converted:
    files = sorted(src.rglob("*_anno.json")) if src.is_dir() else [src]
    if not files:
        raise FacialR1Error(f"{src}: no FABA-Instruct *_anno.json files")
    records = [(f, i, rec) for f in files for i, rec in enumerate(read_records(f))]
    tally.read(len(records))  # every record is written, or a bad one raises
    root = image_root(src, records)
    splits: dict[str, list[dict]] = {}
    for f, i, rec in records:
        split = "train" if f.name.startswith("train") else "test" if f.name.startswith("eval") else "all"
        splits.setdefault(split, []).append(to_sample(f, i, rec))
    return Converted(splits, root, [m for v in splits.values() for m in check_images(v, root)])


def read_records(f: Path) -> list[dict]:
    try:
        records = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise FacialR1Error(f"{f}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(records, list):
        raise FacialR1Error(f"{f}:1: expected a JSON list of records, got {type(records).__name__}")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str) or not isinstance(rec.get("conversations"), list):
            raise FacialR1Error(f"{f}: record {i}: expected 'image' and 'conversations'")
    return records


def to_sample(f: Path, i: int, rec: dict) -> dict:
    answer = next((c.get("value", "") for c in rec["conversations"] if c.get("from") == "gpt"), "")
    question = next((c.get("value", "") for c in rec["conversations"] if c.get("from") == "human"), "")
    task = "au" if "_au_" in f.name else "emotion" if "_emotion_" in f.name else \
        "au" if re.search(r"action unit|\bAUs?\b", question, re.IGNORECASE) else "emotion"
    raw_aus = rec.get("AUs", rec.get("AU"))
    if isinstance(raw_aus, str):
        raw_aus = raw_aus.replace(";", ",").split(",")
    if raw_aus is not None:
        aus = [try_normalize_au(a) for a in raw_aus if str(a).strip()]
        if None in aus:
            raise FacialR1Error(f"{f}: record {i}: unknown AU in {raw_aus}")
    else:
        aus = list(cited_aus(answer)) if task == "au" else None
    meta = {"task": task, "source": rec.get("source", "")}
    emotion = try_normalize_emotion(rec.get("emotion", rec.get("label")))
    if emotion is None and task == "emotion":
        named = {e for e in map(try_normalize_emotion, re.findall(r"[A-Za-z]+", answer)) if e}
        if len(named) == 1:
            emotion, meta["label_source"] = named.pop(), "answer"
    sample = fea_sample(f"faba-{task}-{rec.get('id', i)}", "faba", rec["image"],
                        None if aus is None else sort_aus(aus), [emotion] if emotion else [], meta, description=answer)
    sample["question"] = question.replace("<image>", "").strip() or sample["question"]
    return sample


def image_root(src: Path, records: list) -> Path:
    """The folder the records' `image` paths are relative to: the nearest folder above the
    annotation file where the first image exists, else the parent of FABAInstruct/."""
    first_file, _, first = records[0] if records else (src, 0, {"image": ""})
    for folder in first_file.parents:
        if first["image"] and (folder / first["image"]).is_file():
            return folder
    parts = first_file.resolve().parts
    if "FABAInstruct" in parts and first["image"].startswith("FABAInstruct/"):
        return Path(*parts[:parts.index("FABAInstruct")])
    return first_file.parent
