"""Subject-exclusive folds for DISFA and BP4D: the sorted split, and the published 3-fold split.

The published DISFA and BP4D AU-detection results use three fixed subject parts. The lists are
the same in CVI-SZU/ME-GraphAU tool/DISFA_image_label_process.py and
tool/BP4D_image_label_process.py (part1/part2/part3, BP4D_Sequence_split) and in
ZhiwenShao/PyTorch-JAANet data/list/{DISFA,BP4D}_part{1,2,3}_path.txt (subjects in the same
order). Fold k tests on one part and trains on the other two, numbered as ME-GraphAU numbers
them: fold1 tests on part3, fold2 on part2, fold3 on part1 (JAA-Net's README trains on
combine_1_2 and tests on part3, i.e. fold1).
"""

from __future__ import annotations

from pathlib import Path

from facial_r1.data.converters import subject_folds
from facial_r1.data.schema import write_jsonl

PAPER_PARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "disfa": (
        ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
        ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
        ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
    ),
    "bp4d": (
        ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016", "M014", "F023", "M008"),
        ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020", "F011", "M013", "M005"),
        ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017", "M015", "F014"),
    ),
}
TEST_PART = {1: 3, 2: 2, 3: 1}  # ME-GraphAU: fold k tests on this part


def write_folds(fmt: str, samples: list[dict], k: int, out_dir: Path) -> dict:
    """Write fold{i}.jsonl (subjects sorted, k groups) and, for k == 3, paper_fold{i}_{train,test}.jsonl."""
    report = {"folds": {f"fold{i + 1}": write_jsonl(out_dir / f"fold{i + 1}.jsonl", fold)
                        for i, fold in enumerate(subject_folds(samples, k))}}
    if k != 3:
        report["paper_folds"] = "not written: the published splits have 3 folds (--folds 3)"
        return report
    parts = PAPER_PARTS[fmt]
    part_of = {s: p for p, subjects in enumerate(parts, start=1) for s in subjects}
    paper = {}
    for fold, test_part in TEST_PART.items():
        test = [s for s in samples if part_of.get(s["meta_info"]["subject"]) == test_part]
        train = [s for s in samples if part_of.get(s["meta_info"]["subject"]) not in (test_part, None)]
        paper[f"paper_fold{fold}_test"] = write_jsonl(out_dir / f"paper_fold{fold}_test.jsonl", test)
        paper[f"paper_fold{fold}_train"] = write_jsonl(out_dir / f"paper_fold{fold}_train.jsonl", train)
    report["paper_folds"] = paper
    outside = sorted({s["meta_info"]["subject"] for s in samples} - set(part_of))
    if outside:
        report["subjects_outside_paper_folds"] = outside
    return report
