"""FABA-Instruct (EmoLA, ECCV 2024): the release's FABAInstruct/{train,eval}/{train,eval}_{au,emotion}_anno.json,
each a JSON list of records, with `image` relative to the folder that holds FABAInstruct/
("FABAInstruct/train/images/..."). Two record shapes:
- train (JackYFL/EmoLA README): LLaVA-style {"source", "image", "id", "conversations":
  [{"from": "human", "value": "...\\n<image>"}, {"from": "gpt", "value": ...}], "landmark"};
- eval, as EmoLA's eval script reads them (JackYFL/EmoLA emollava/eval/eval_FABA.py:
  `img['image'], img['label'], img['gpt4']`, `img['landmark']`): "label" and "gpt4" fields, with
  or without conversations. An AU label is the AU numbers joined by ", " ("1, 2, 4",
  `AU_int_string.split(', ')`); an emotion label is a name ("Happiness") or an index in EmoLA's
  order (`emotions2num`: 0 Happiness, 1 Sadness, 2 Surprise, 3 Anger, 4 Neutral, 5 Disgust, 6 Fear).

`--input` is one annotation file or the FABAInstruct folder (then train_* files become the
train split and eval_* files the test split). The reference answer (gpt value, else "gpt4")
becomes `description` (the reference for ROUGE-L). The task comes from the file name
(`*_au_anno` / `*_emotion_anno`), else from the question. AUs come from explicit "AU"/"AUs"
fields, else an AU record's "label", else the AUs its answer names ("1. AU4 - Brow Lowerer: ...").
An emotion record's label is an explicit "emotion"/"label" field when present, else the one
emotion its answer names (meta_info.label_source = "answer"); an answer naming none or several
("neither joy nor sadness") gets no label. A record without conversations asks EmoLA's eval
question. Ids are prefixed with the task, since the release reuses an image's id in both tasks.
A record that cannot be read (no image, no answer and no label, an unreadable label) is dropped
and counted; the other records of the folder are converted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from facial_r1.data.converters import Converted, Tally, check_images, fea_sample
from facial_r1.errors import FacialR1Error
from facial_r1.facs import sort_aus, try_normalize_au, try_normalize_emotion
from facial_r1.parse import cited_aus

EMOLA_ORDER = ("Happiness", "Sadness", "Surprise", "Anger", "Neutral", "Disgust", "Fear")  # eval_FABA.py emotions2num
EVAL_QUESTION = {"au": "What AUs are conveyed by this face?", "emotion": "What emotions are conveyed by this face?"}


def convert(src: Path, tally: Tally) -> Converted:
    files = sorted(src.rglob("*_anno.json")) if src.is_dir() else [src]
    if not files:
        raise FacialR1Error(f"{src}: no FABA-Instruct *_anno.json files")
    records = [(f, i, rec) for f in files for i, rec in enumerate(read_records(f))]
    splits: dict[str, list[dict]] = {}
    kept = []
    for f, i, rec in records:
        tally.read()
        try:
            sample = to_sample(f, i, rec)
        except ValueError as e:
            tally.drop("unreadable record", f"{f}: record {i}", e, bad=True)
            continue
        kept.append((f, i, rec))
        split = "train" if f.name.startswith("train") else "test" if f.name.startswith("eval") else "all"
        splits.setdefault(split, []).append(sample)
    root = image_root(src, kept)
    return Converted(splits, root, [m for v in splits.values() for m in check_images(v, root)])


def read_records(f: Path) -> list:
    try:
        records = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise FacialR1Error(f"{f}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(records, list):
        raise FacialR1Error(f"{f}:1: expected a JSON list of records, got {type(records).__name__}")
    return records


def to_sample(f: Path, i: int, rec: object) -> dict:
    """The record's FEA sample; ValueError names what the record lacks."""
    if not isinstance(rec, dict) or not isinstance(rec.get("image"), str) or not rec["image"]:
        raise ValueError("no 'image'")
    turns = rec.get("conversations") if isinstance(rec.get("conversations"), list) else []
    answer = next((c.get("value", "") for c in turns if isinstance(c, dict) and c.get("from") == "gpt"), "")
    answer = answer or (rec["gpt4"] if isinstance(rec.get("gpt4"), str) else "")
    question = next((c.get("value", "") for c in turns if isinstance(c, dict) and c.get("from") == "human"), "")
    if not answer and rec.get("label") is None:
        raise ValueError("neither an answer (conversations, gpt4) nor a label")
    task = "au" if "_au_" in f.name else "emotion" if "_emotion_" in f.name else \
        "au" if re.search(r"action unit|\bAUs?\b", question, re.IGNORECASE) else "emotion"
    aus = record_aus(rec, task, answer)
    meta = {"task": task, "source": rec.get("source", "")}
    emotion, meta["label_source"] = record_emotion(rec, task, answer)
    if meta["label_source"] is None:
        del meta["label_source"]
    sample = fea_sample(f"faba-{task}-{rec.get('id', i)}", "faba", rec["image"], aus,
                        [emotion] if emotion else [], meta, description=answer)
    sample["question"] = question.replace("<image>", "").strip() or EVAL_QUESTION[task]
    return sample


def record_aus(rec: dict, task: str, answer: str) -> list[str] | None:
    raw = rec.get("AUs", rec.get("AU", rec.get("label") if task == "au" else None))
    if raw is None:
        return sort_aus(cited_aus(answer)) if task == "au" else None
    tokens = raw.replace(";", ",").split(",") if isinstance(raw, str) else raw if isinstance(raw, list) else [raw]
    aus = [try_normalize_au(str(t).strip()) for t in tokens if str(t).strip()]
    if None in aus:
        raise ValueError(f"an AU label that is not a FACS AU: {raw!r}")
    return sort_aus(aus)


def record_emotion(rec: dict, task: str, answer: str) -> tuple[str | None, str | None]:
    """(emotion, where it came from): an explicit field, EmoLA's index, or the one emotion the answer names."""
    raw = rec.get("emotion", rec.get("label") if task == "emotion" else None)
    if isinstance(raw, int) or (isinstance(raw, str) and raw.strip().isdigit()):
        if not 0 <= int(raw) < len(EMOLA_ORDER):
            raise ValueError(f"emotion index {raw!r} outside EmoLA's 0-6")
        return EMOLA_ORDER[int(raw)], "label"
    if raw is not None:
        emotion = try_normalize_emotion(raw)
        if emotion is None:
            raise ValueError(f"an emotion label that is no emotion: {raw!r}")
        return emotion, "label"
    if task == "emotion":
        named = {e for e in map(try_normalize_emotion, re.findall(r"[A-Za-z]+", answer)) if e}
        if len(named) == 1:
            return named.pop(), "answer"
    return None, None


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
