"""FABA-Instruct (EmoLA): a JSON list of LLaVA-style records
{"id", "image", "conversations": [{"from": "human", ...}, {"from": "gpt", "value": ...}], ...}.

The gpt answer becomes `description` (free text, the reference for ROUGE-L). Labels come
from explicit fields when present: "emotion"/"label" for the emotion, "AU"/"AUs" (list or
'AU1, AU2' string) for the AUs; otherwise an AU record takes the AUs named in the answer.
Images are relative to the JSON file's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from facial_r1.data.converters import Converted, check_images, fea_sample, row_error
from facial_r1.errors import FacialR1Error
from facial_r1.facs import sort_aus, try_normalize_au, try_normalize_emotion
from facial_r1.parse import cited_aus


def convert(src: Path) -> Converted:
    if src.is_dir():
        raise FacialR1Error(f"{src}: give the FABA-Instruct JSON file")
    try:
        records = json.loads(src.read_text())
    except json.JSONDecodeError as e:
        raise FacialR1Error(f"{src}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(records, list):
        raise row_error(src, 1, "a JSON list of records", type(records).__name__)
    samples = []
    for i, rec in enumerate(records):
        where = f"record {i}"
        if not isinstance(rec, dict) or "image" not in rec or not isinstance(rec.get("conversations"), list):
            raise FacialR1Error(f"{src}: {where}: expected image and conversations")
        answer = next((c.get("value", "") for c in rec["conversations"] if c.get("from") == "gpt"), "")
        question = next((c.get("value", "") for c in rec["conversations"] if c.get("from") == "human"), "")
        emotion = try_normalize_emotion(rec.get("emotion", rec.get("label")))
        raw_aus = rec.get("AUs", rec.get("AU"))
        if isinstance(raw_aus, str):
            raw_aus = raw_aus.replace(";", ",").split(",")
        if raw_aus is not None:
            aus = [try_normalize_au(a) for a in raw_aus if str(a).strip()]
            if None in aus:
                raise FacialR1Error(f"{src}: {where}: unknown AU in {raw_aus}")
        else:
            aus = list(cited_aus(answer)) if "action unit" in question.lower() or "AU" in question else None
        sample = fea_sample(f"faba-{rec.get('id', i)}", "faba", rec["image"], None if aus is None else sort_aus(aus),
                            [emotion] if emotion else [], {"task": "au" if aus is not None else "emotion"},
                            description=answer)
        sample["question"] = question.replace("<image>", "").strip() or sample["question"]
        samples.append(sample)
    return Converted({"all": samples}, src.parent, check_images(samples, src.parent))
