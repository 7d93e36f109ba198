import json

import pytest
from PIL import Image

from facial_r1.data.converters import convert
from facial_r1.data.schema import read_jsonl
from facial_r1.errors import FacialR1Error


def jpg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def test_fer2013(tmp_path):
    px = " ".join(["7"] * 2304)
    (tmp_path / "fer2013.csv").write_text(
        f"emotion,pixels,Usage\n3,{px},Training\n0,{px},PrivateTest\n6,{px},PublicTest\n")
    r = convert("fer2013", tmp_path / "fer2013.csv", tmp_path / "out")
    assert r["written"] == {"train": 1, "test": 1, "val": 1} and r["missing_images"] == 0
    train = read_jsonl(tmp_path / "out/train.jsonl")
    assert train[0]["labels"] == ["Happiness"] and train[0]["AUs"] is None
    assert Image.open(tmp_path / "out" / train[0]["image"]).size == (48, 48)
    assert read_jsonl(tmp_path / "out/test.jsonl")[0]["labels"] == ["Anger"]


def test_fer2013_bad_row(tmp_path):
    (tmp_path / "f.csv").write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    with pytest.raises(FacialR1Error, match="f.csv:2: expected 2304 pixel values"):
        convert("fer2013", tmp_path / "f.csv", tmp_path / "out")


def test_rafdb(tmp_path):
    root = tmp_path / "basic"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel/list_patition_label.txt").write_text("train_00001.jpg 1\ntest_0001.jpg 7\ntrain_00002.jpg 4\n")
    jpg(root / "Image/aligned/train_00001_aligned.jpg")
    jpg(root / "Image/original/test_0001.jpg")
    r = convert("rafdb", root, tmp_path / "out")
    assert r["written"] == {"train": 2, "test": 1}
    assert r["missing_images"] == 1 and r["missing_examples"] == ["Image/original/train_00002.jpg"]
    train = read_jsonl(tmp_path / "out/train.jsonl")
    assert [s["labels"] for s in train] == [["Surprise"], ["Happiness"]]  # 1-indexed order
    assert train[0]["image"] == "Image/aligned/train_00001_aligned.jpg"
    (root / "EmoLabel/list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(FacialR1Error, match="list_patition_label.txt:1: expected"):
        convert("rafdb", root, tmp_path / "out2")


@pytest.mark.parametrize("classes, expected", [(8, ["Neutral", "Anger", "Contempt"]), (7, ["Neutral", "Anger"])])
def test_affectnet(tmp_path, classes, expected):
    csv = tmp_path / "training.csv"
    csv.write_text("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
                   "1/a.jpg,0,0,1,1,x,0,0,0\n1/b.jpg,0,0,1,1,x,6,0,0\n1/c.jpg,0,0,1,1,x,7,0,0\n"
                   "1/d.jpg,0,0,1,1,x,8,0,0\n1/e.jpg,0,0,1,1,x,9,0,0\n1/f.jpg,0,0,1,1,x,10,0,0\n")
    jpg(tmp_path / "Manually_Annotated_Images/1/a.jpg")
    r = convert("affectnet", csv, tmp_path / "out", classes=classes)
    got = read_jsonl(tmp_path / "out/train.jsonl")
    assert [s["labels"][0] for s in got] == expected
    assert r["missing_images"] == len(expected) - 1


def write_disfa(root, subjects):
    for sn, rows in subjects.items():
        d = root / "ActionUnit_Labels" / sn
        d.mkdir(parents=True)
        for au in (1, 2, 4, 6, 9, 12, 25, 26):
            (d / f"{sn}_au{au}.txt").write_text("\n".join(f"{fr},{rows.get((fr, au), 0)}" for fr in (1, 2)) + "\n")


def test_disfa_threshold_and_folds(tmp_path):
    write_disfa(tmp_path, {"SN001": {(1, 12): 2, (1, 6): 1, (2, 26): 5}, "SN002": {}, "SN003": {(1, 4): 3}})
    r = convert("disfa", tmp_path, tmp_path / "out", folds=3)
    rows = {s["id"]: s for s in read_jsonl(tmp_path / "out/all.jsonl")}
    assert rows["disfa-SN001-00001"]["AUs"] == ["AU12"]        # intensity 2 counts, 1 does not
    assert rows["disfa-SN001-00002"]["AUs"] == ["AU26"]
    assert rows["disfa-SN003-00001"]["AUs"] == ["AU4"]
    assert rows["disfa-SN001-00001"]["meta_info"]["subject"] == "SN001"
    folds = [read_jsonl(tmp_path / f"out/fold{i}.jsonl") for i in (1, 2, 3)]
    assert [sorted({s["meta_info"]["subject"] for s in f}) for f in folds] == [["SN001"], ["SN002"], ["SN003"]]
    assert r["missing_images"] == 6


def test_disfa_bad_row(tmp_path):
    write_disfa(tmp_path, {"SN001": {}})
    (tmp_path / "ActionUnit_Labels/SN001/SN001_au4.txt").write_text("1,0\n2,seven\n")
    with pytest.raises(FacialR1Error, match="SN001_au4.txt:2: expected 'frame,intensity'"):
        convert("disfa", tmp_path, tmp_path / "out")


def test_bp4d(tmp_path):
    occ = tmp_path / "AUCoding/AU_OCC"
    occ.mkdir(parents=True)
    header = "Frame,1,2,4,5,6,7,9,10,11,12,13,14,15,16,17,18,19,20,22,23,24,25,26,27,28"
    au_cols = header.split(",")[1:]

    def row(frame, on=(), unknown=()):
        return ",".join([str(frame)] + ["9" if c in unknown else "1" if c in on else "0" for c in au_cols])
    (occ / "F001_T1.csv").write_text("\n".join([header, row(1, on=("1", "12")), row(2, unknown=("4",)), row(3, on=("5",))]))
    (occ / "M002_T2.csv").write_text("\n".join([header, row(7, on=("23", "24"))]))
    convert("bp4d", tmp_path, tmp_path / "out", folds=2)
    rows = {s["id"]: s for s in read_jsonl(tmp_path / "out/all.jsonl")}
    assert rows["bp4d-F001-T1-0001"]["AUs"] == ["AU1", "AU12"]
    assert "bp4d-F001-T1-0002" not in rows                      # unknown in a standard AU: dropped
    assert rows["bp4d-F001-T1-0003"]["AUs"] == []              # AU5 is not one of the 12
    assert rows["bp4d-M002-T2-0007"]["image"] == "M002/T2/7.jpg"
    assert len(read_jsonl(tmp_path / "out/fold1.jsonl")) == 2 and len(read_jsonl(tmp_path / "out/fold2.jsonl")) == 1


def test_rafau(tmp_path):
    (tmp_path / "RAFAU_label.txt").write_text("0001.jpg 1+2+25+26\n0002.jpg L12+R14B\n0003.jpg null\n")
    jpg(tmp_path / "aligned/0001.jpg")
    r = convert("rafau", tmp_path, tmp_path / "out")
    got = read_jsonl(tmp_path / "out/all.jsonl")
    assert [s["AUs"] for s in got] == [["AU1", "AU2", "AU25", "AU26"], ["AU12", "AU14"], []]
    assert got[0]["image"] == "aligned/0001.jpg" and r["missing_images"] == 2
    (tmp_path / "RAFAU_label.txt").write_text("0001.jpg 1+3\n")
    with pytest.raises(FacialR1Error, match="RAFAU_label.txt:1: expected AU codes"):
        convert("rafau", tmp_path, tmp_path / "out2")


def test_faba(tmp_path):
    recs = [
        {"id": "e1", "image": "emo/1.jpg", "emotion": "happy", "conversations": [
            {"from": "human", "value": "<image>\nWhat is the facial expression?"},
            {"from": "gpt", "value": "The person is smiling, so happiness."}]},
        {"id": "a1", "image": "au/1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhich facial action units are active?"},
            {"from": "gpt", "value": "AU6 and AU12 are active."}]},
        {"id": "a2", "image": "au/2.jpg", "AU": "AU1, AU2", "conversations": [
            {"from": "human", "value": "Which action units?"}, {"from": "gpt", "value": "Brows up."}]},
    ]
    (tmp_path / "faba.json").write_text(json.dumps(recs))
    jpg(tmp_path / "emo/1.jpg")
    convert("faba", tmp_path / "faba.json", tmp_path / "out")
    got = read_jsonl(tmp_path / "out/all.jsonl")
    assert [(s["AUs"], s["labels"]) for s in got] == [(None, ["Happiness"]), (["AU6", "AU12"], []), (["AU1", "AU2"], [])]
    assert got[0]["description"] == "The person is smiling, so happiness."
    assert got[0]["question"] == "What is the facial expression?"


def test_fea20k_normalises(tmp_path):
    (tmp_path / "fea.jsonl").write_text(json.dumps({"id": "x", "dataset": "fea", "image": "a.jpg", "AUs": ["au04"],
                                                    "labels": ["angry"], "description": "d", "meta_info": {}}) + "\n")
    convert("fea20k", tmp_path / "fea.jsonl", tmp_path / "out")
    assert read_jsonl(tmp_path / "out/fea.jsonl")[0]["AUs"] == ["AU4"]


def test_unknown_format(tmp_path):
    with pytest.raises(FacialR1Error, match="unknown format 'ckplus'"):
        convert("ckplus", tmp_path, tmp_path / "out")
