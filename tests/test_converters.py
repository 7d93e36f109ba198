import json

import numpy as np
import pytest
from PIL import Image

from facial_r1.data.converters import convert
from facial_r1.data.schema import read_jsonl
from facial_r1.errors import FacialR1Error


def jpg(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).convert("RGB").save(path)


def pixel(path):
    return int(np.asarray(Image.open(path).convert("L"))[0, 0])


def accounted(r):
    """Every input row is written or dropped under a reason, and the report says so."""
    assert r["rows"]["written"] == sum(r["written"].values())
    assert r["rows"]["read"] == r["rows"]["written"] + sum(d["n"] for d in r["dropped"].values())
    return {reason: d["n"] for reason, d in r["dropped"].items()}


def test_fer2013(tmp_path):
    # Kaggle fer2013.csv: header emotion,pixels,Usage; 48x48 space-separated grey values; Usage
    # Training / PublicTest / PrivateTest (public readers split on row['Usage'] == 'PrivateTest' etc.;
    # Facial-R1's released eval names its test set PrivateTest_images_annotations). Some copies end
    # in junk lines ("Expected 3 fields in line 35891, saw 6": isseu/emotion-recognition-neural-networks
    # issue #19): dropped and counted.
    px = " ".join(["7"] * 2304)
    (tmp_path / "fer2013.csv").write_text(
        f"emotion,pixels,Usage\n3,{px},Training\n0,{px},PrivateTest\n6,{px},PublicTest\n1,2,3,4,5,6\n")
    r = convert("fer2013", tmp_path / "fer2013.csv", tmp_path / "out")
    assert r["written"] == {"train": 1, "test": 1, "val": 1} and r["missing_images"] == 0
    assert accounted(r) == {"unreadable row (emotion 0-6, 2304 pixels, a known Usage)": 1}
    train = read_jsonl(tmp_path / "out/train.jsonl")
    assert train[0]["labels"] == ["Happiness"] and train[0]["AUs"] is None
    assert Image.open(tmp_path / "out" / train[0]["image"]).size == (48, 48)
    assert read_jsonl(tmp_path / "out/test.jsonl")[0]["labels"] == ["Anger"]


def test_fer2013_icml_face_data(tmp_path):
    # Kaggle's icml_face_data.csv: header "emotion, Usage, pixels", leading spaces and another column
    # order (pytorch/vision PR #8452: `pixels_key = " pixels" if use_icml`, torchvision/datasets/fer2013.py)
    rows = [(3, "Training", 10), (4, "PublicTest", 20), (5, "PrivateTest", 30)]
    (tmp_path / "icml_face_data.csv").write_text(
        "emotion, Usage, pixels\n" + "".join(f"{e},{u},{' '.join([str(v)] * 2304)}\n" for e, u, v in rows))
    r = convert("fer2013", tmp_path / "icml_face_data.csv", tmp_path / "out")
    assert r["written"] == {"train": 1, "val": 1, "test": 1} and accounted(r) == {}
    for split, (emotion, value) in {"train": ("Happiness", 10), "val": ("Sadness", 20), "test": ("Surprise", 30)}.items():
        (row,) = read_jsonl(tmp_path / f"out/{split}.jsonl")
        assert row["labels"] == [emotion] and pixel(tmp_path / "out" / row["image"]) == value


def test_fer2013_train_and_test_csv(tmp_path):
    # The challenge's train.csv (emotion,pixels) and test.csv (pixels only, no label column):
    # lisa-lab/pylearn2 pylearn2/scripts/icml_2013_wrepl/emotions/emotions_dataset.py
    # (`y_str, X_row_str = row` / `X_row_str ,= row`), pytorch/vision issue #8118. In a folder,
    # fer2013.csv, then icml_face_data.csv, win over train/test.csv (pytorch/vision PR #8452).
    px = " ".join(["9"] * 2304)
    (tmp_path / "train.csv").write_text(f"emotion,pixels\n0,{px}\n6,{px}\n")
    (tmp_path / "test.csv").write_text(f"pixels\n{px}\n")
    r = convert("fer2013", tmp_path, tmp_path / "out")
    assert r["written"] == {"train": 2, "unlabelled": 1} and accounted(r) == {}
    assert r["fer2013_files"] == ["train.csv", "test.csv"]
    assert [s["labels"] for s in read_jsonl(tmp_path / "out/train.jsonl")] == [["Anger"], ["Neutral"]]
    (unlabelled,) = read_jsonl(tmp_path / "out/unlabelled.jsonl")
    assert unlabelled["labels"] == [] and unlabelled["id"] == "fer2013-test-00000"
    (tmp_path / "fer2013.csv").write_text(f"emotion,pixels,Usage\n2,{px},Training\n")
    assert convert("fer2013", tmp_path, tmp_path / "out2")["written"] == {"train": 1}


def test_fer2013_bad_row(tmp_path):
    (tmp_path / "f.csv").write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    r = convert("fer2013", tmp_path / "f.csv", tmp_path / "out")
    assert r["written"] == {} and r["dropped"]["unreadable row (emotion 0-6, 2304 pixels, a known Usage)"]["examples"] \
        == [f"{tmp_path / 'f.csv'}:2: '3 pixel values'"]
    with pytest.raises(FacialR1Error, match="f.csv:2: unreadable row .* got '3 pixel values' \\(--strict\\)"):
        convert("fer2013", tmp_path / "f.csv", tmp_path / "out", strict=True)


def test_rafdb(tmp_path):
    # RAF-DB basic: EmoLabel/list_patition_label.txt, '<name> <label 1-7>' separated by one space,
    # aligned images Image/aligned/<stem>_aligned.jpg (public readers: pd.read_csv(..., sep=' ',
    # names=['name', 'label']) and f.split(".")[0] + "_aligned.jpg")
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
    assert accounted(r) == {}
    (root / "EmoLabel/list_patition_label.txt").write_text("train_00001.jpg 9\ntest_0001.jpg 7\n")
    r = convert("rafdb", root, tmp_path / "out2")  # a label outside 1-7: that line dropped and counted
    assert r["written"] == {"test": 1} and accounted(r) == {"unreadable line (expected '<name>.jpg <label 1-7>')": 1}
    with pytest.raises(FacialR1Error, match="list_patition_label.txt:1: unreadable line"):
        convert("rafdb", root, tmp_path / "out3", strict=True)


@pytest.mark.parametrize("classes, expected", [(8, ["Neutral", "Anger", "Contempt"]), (7, ["Neutral", "Anger"])])
def test_affectnet(tmp_path, classes, expected):
    # AffectNet's Manually_Annotated_file_lists/training.csv: the header below, one ';'-joined
    # landmarks field, images under Manually_Annotated/Manually_Annotated_Images/ (public readers:
    # `subDirectory_filePath, face_x, ..., arousal = sample.split(',')`, facial_landmarks.split(';'),
    # os.path.join(root, 'Manually_Annotated', 'Manually_Annotated_Images', d.subDirectory_filePath))
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    csv = lists / "training.csv"
    lm = ";".join(["13.0", "78.5"] * 68)
    csv.write_text("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
                   + "".join(f"689/{c}.jpg,134,134,899,899,{lm},{e},0.785714,-0.055556\n"
                             for c, e in zip("abcdef", (0, 6, 7, 8, 9, 10), strict=True)))
    jpg(tmp_path / "Manually_Annotated/Manually_Annotated_Images/689/a.jpg")
    r = convert("affectnet", csv, tmp_path / "out", classes=classes)
    got = read_jsonl(tmp_path / "out/train.jsonl")
    assert [s["labels"][0] for s in got] == expected
    assert r["missing_images"] == len(expected) - 1
    dropped = {"expression 8 (None): not an emotion": 1, "expression 9 (Uncertain): not an emotion": 1,
               "expression 10 (No-Face): not an emotion": 1}
    assert accounted(r) == dropped if classes == 8 else {**dropped, "expression 7 (Contempt) with --classes 7": 1}


def test_affectnet_validation_without_header_and_both_lists(tmp_path):
    # Copies of validation.csv without the header row: public loaders read it with pandas
    # header=None and take training.csv's column names, or start validation.csv at line 0 and
    # training.csv at line 1 (two loaders the code index found; it did not name their repositories).
    # The folder holding both lists converts both: training -> train, validation -> test.
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    lm = ";".join(["1.5"] * 136)
    (lists / "training.csv").write_text(
        "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
        f"1/t.jpg,0,0,100,100,{lm},1,0.5,0.2\n")
    (lists / "validation.csv").write_text(f"2/v1.jpg,0,0,100,100,{lm},2,-0.5,0.1\n2/v2.jpg,0,0,100,100,{lm},5,-0.7,0.3\n"
                                          f"2/v3.jpg,0,0,100,100,{lm},happy,0,0\n")
    r = convert("affectnet", tmp_path, tmp_path / "out")
    assert r["written"] == {"train": 1, "test": 2} and r["affectnet_header_row"] == {"training.csv": True, "validation.csv": False}
    assert [s["labels"] for s in read_jsonl(tmp_path / "out/test.jsonl")] == [["Sadness"], ["Disgust"]]  # first row kept
    assert accounted(r) == {"unreadable row (expression 0-10 in the 7th column)": 1}


def test_affectnet_train_set_val_set_npy(tmp_path):
    # The release as train_set/ and val_set/, images/<n>.jpg with annotations/<n>_exp.npy (and _val,
    # _aro, _lnd): yaoing/DAN affectnet.py get_df (`glob(train_path + 'annotations/*_exp.npy')`,
    # `int(np.load(anno))`, images/{idx}.jpg); armand-07/emotion_recognition counts 4 annotation files per image
    for folder, n, code in (("train_set", 0, "3"), ("train_set", 1, "7"), ("train_set", 2, "9"), ("val_set", 0, "6")):
        (tmp_path / folder / "annotations").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / folder / "annotations" / f"{n}_exp.npy", np.array(code))
        np.save(tmp_path / folder / "annotations" / f"{n}_val.npy", np.array("0.25"))
        jpg(tmp_path / folder / "images" / f"{n}.jpg")
    r = convert("affectnet", tmp_path, tmp_path / "out", classes=7)
    assert r["written"] == {"train": 1, "test": 1} and r["missing_images"] == 0
    assert accounted(r) == {"expression 7 (Contempt) with --classes 7": 1, "expression 9 (Uncertain): not an emotion": 1}
    (train,) = read_jsonl(tmp_path / "out/train.jsonl")
    (test,) = read_jsonl(tmp_path / "out/test.jsonl")
    assert (train["labels"], train["image"], train["id"]) == (["Surprise"], "train_set/images/0.jpg", "affectnet-train_set-0")
    assert (test["labels"], test["image"]) == (["Anger"], "val_set/images/0.jpg")


DISFA_CODED = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)  # the release's 12 label files


def write_disfa(root, subjects, frames=(1, 2)):
    # ActionUnit_Labels/SN001/SN001_au1.txt ..., lines 'frame,intensity', frames counted from 1
    # (CVI-SZU/ME-GraphAU tool/DISFA_image_label_process.py: frameIdx, AUIntensity = lines.split(','))
    for sn, rows in subjects.items():
        d = root / "ActionUnit_Labels" / sn
        d.mkdir(parents=True)
        for au in DISFA_CODED:
            (d / f"{sn}_au{au}.txt").write_text("\n".join(f"{fr},{rows.get((fr, au), 0)}" for fr in frames) + "\n")


def test_disfa_threshold_and_folds(tmp_path):
    write_disfa(tmp_path, {"SN001": {(1, 12): 2, (1, 6): 1, (2, 26): 5, (2, 15): 3}, "SN002": {}, "SN003": {(1, 4): 3}})
    r = convert("disfa", tmp_path, tmp_path / "out", folds=3)
    rows = {s["id"]: s for s in read_jsonl(tmp_path / "out/all.jsonl")}
    assert rows["disfa-SN001-00001"]["AUs"] == ["AU12"]        # intensity 2 counts, 1 does not
    assert rows["disfa-SN001-00002"]["AUs"] == ["AU15", "AU26"]  # AU15 is one of the 12 coded, kept
    assert rows["disfa-SN003-00001"]["AUs"] == ["AU4"]
    assert rows["disfa-SN001-00001"]["meta_info"]["subject"] == "SN001"
    folds = [read_jsonl(tmp_path / f"out/fold{i}.jsonl") for i in (1, 2, 3)]
    assert [sorted({s["meta_info"]["subject"] for s in f}) for f in folds] == [["SN001"], ["SN002"], ["SN003"]]
    # the published folds (ME-GraphAU tool/DISFA_image_label_process.py part1..3, the same subjects as
    # PyTorch-JAANet data/list/DISFA_part{1,2,3}_path.txt): SN001 and SN002 in part1, SN003 in part3;
    # fold1 tests on part3, fold3 on part1
    assert r["paper_folds"] == {"paper_fold1_test": 2, "paper_fold1_train": 4, "paper_fold2_test": 0,
                                "paper_fold2_train": 6, "paper_fold3_test": 4, "paper_fold3_train": 2}
    assert {s["meta_info"]["subject"] for s in read_jsonl(tmp_path / "out/paper_fold1_test.jsonl")} == {"SN003"}
    assert r["missing_images"] == 6 and accounted(r) == {}
    assert r["disfa"]["frame_numbering"] == {"no frame images found (paths assume numbered from 1 (image n holds "
                                             "label frame n))": ["SN001", "SN002", "SN003"]}
    r = convert("disfa", tmp_path, tmp_path / "out1", intensity_threshold=1)  # OpenGraphAU's >= 1
    assert {s["id"]: s["AUs"] for s in read_jsonl(tmp_path / "out1/all.jsonl")}["disfa-SN001-00001"] == ["AU6", "AU12"]


def test_disfa_pairs_frames_numbered_from_0_by_pixel_content(tmp_path):
    # DISFA ships videos; ME-GraphAU pairs label line t with data/DISFA/img/SN001/t.png (its
    # tool/README.md example `data/DISFA/img/SN001/0.png`, and DISFA_image_label_process.py's
    # `frame_img_name = fr + '/' + str(i) + '.png'`), i.e. SN001/0.png is label frame 1. Each frame
    # gets its own grey level, so a row paired with its neighbour's frame shows up in the pixels.
    write_disfa(tmp_path, {"SN001": {(1, 1): 3, (2, 2): 3, (3, 4): 3}}, frames=(1, 2, 3))
    (tmp_path / "img/SN001").mkdir(parents=True)
    for n in range(4):  # PNG keeps the grey level exact; 3.png: a video frame after the last label line
        Image.fromarray(np.full((8, 8), 40 * (n + 1), np.uint8)).save(tmp_path / "img/SN001" / f"{n}.png")
    r = convert("disfa", tmp_path, tmp_path / "out")
    rows = read_jsonl(tmp_path / "out/all.jsonl")
    assert [(s["meta_info"]["frame"], s["AUs"], s["image"]) for s in rows] == \
        [(1, ["AU1"], "SN001/0.png"), (2, ["AU2"], "SN001/1.png"), (3, ["AU4"], "SN001/2.png")]
    assert [pixel(tmp_path / "img" / s["image"]) for s in rows] == [40 * s["meta_info"]["frame"] for s in rows]
    assert r["image_folder"] == str(tmp_path / "img") and r["missing_images"] == 0
    assert r["disfa"]["frame_numbering"] == {"numbered from 0 (image n holds label frame n+1)": ["SN001"]}


def test_disfa_frames_numbered_from_1_jpg_and_forced_offset(tmp_path):
    # Frames extracted counting from 1 as .jpg next to ActionUnit_Labels/ (the converter's earlier
    # layout <subject>/<frame>.jpg); per subject, the numbering that leaves no image unpaired wins.
    # --frame-offset forces a numbering; images that fit neither are an error naming examples.
    write_disfa(tmp_path, {"SN002": {(1, 12): 4}, "SN003": {}}, frames=(1, 2))
    for n in (1, 2):
        jpg(tmp_path / "SN002" / f"{n}.jpg", 100 + 50 * n)
    r = convert("disfa", tmp_path, tmp_path / "out")
    rows = [s for s in read_jsonl(tmp_path / "out/all.jsonl") if s["meta_info"]["subject"] == "SN002"]
    assert [s["image"] for s in rows] == ["SN002/1.jpg", "SN002/2.jpg"] and rows[0]["AUs"] == ["AU12"]
    assert [abs(pixel(tmp_path / s["image"]) - (100 + 50 * s["meta_info"]["frame"])) <= 2 for s in rows] == [True, True]
    assert r["disfa"]["frame_numbering"] == {"numbered from 1 (image n holds label frame n)": ["SN002"],
                                             "no frame images found (paths assume numbered from 1 (image n holds "
                                             "label frame n))": ["SN003"]}
    r = convert("disfa", tmp_path, tmp_path / "out2", frame_offset=-1)
    assert [s["image"] for s in read_jsonl(tmp_path / "out2/all.jsonl")][:2] == ["SN002/0.jpg", "SN002/1.jpg"]
    assert r["missing_images"] == 3  # SN002/0.jpg and SN003's two frames
    for n in (1, 2):
        (tmp_path / "SN002" / f"{n}.jpg").rename(tmp_path / "SN002" / f"{n + 100}.jpg")
    with pytest.raises(FacialR1Error, match=r"SN002: the frame images match neither numbering: e.g. \['SN002/101.jpg'"):
        convert("disfa", tmp_path, tmp_path / "out3")


def test_disfa_missing_labels_are_never_off(tmp_path):
    # A frame missing from a benchmark AU's file is dropped and counted; one missing only from
    # another AU's file (or whose file is absent) keeps that AU unknown; absent files are reported.
    write_disfa(tmp_path, {"SN001": {(1, 15): 4, (3, 1): 2}}, frames=(1, 2, 3))
    labels = tmp_path / "ActionUnit_Labels/SN001"
    (labels / "SN001_au4.txt").write_text("1,0\n3,0\n")      # frame 2 lacks AU4 (benchmark): dropped
    (labels / "SN001_au15.txt").write_text("1,4\n2,0\n")     # frame 3 lacks AU15: kept, AU15 unknown
    (labels / "SN001_au20.txt").unlink()                      # no AU20 file at all: reported, unknown
    (labels / "SN001_au9.txt").write_text("1,0\n2,seven\n3,0\n")  # unreadable line: frame 2 lacks AU9 too
    r = convert("disfa", tmp_path, tmp_path / "out")
    rows = {s["meta_info"]["frame"]: s for s in read_jsonl(tmp_path / "out/all.jsonl")}
    assert sorted(rows) == [1, 3]
    assert rows[1]["AUs"] == ["AU15"] and rows[1]["meta_info"]["unknown_aus"] == ["AU20"]
    assert rows[3]["AUs"] == ["AU1"] and rows[3]["meta_info"]["unknown_aus"] == ["AU15", "AU20"]
    assert accounted(r) == {"frame without the label of a benchmark AU": 1}
    assert r["dropped"]["frame without the label of a benchmark AU"]["examples"] == ["SN001 frame 2: 'no label for AU4,AU9,AU20'"]
    assert r["disfa"]["missing_label_files"] == {"SN001": ["AU20"]} and r["disfa"]["kept_with_unknown_aus"] == 2
    assert r["disfa"]["unreadable_lines"]["n"] == 1
    with pytest.raises(FacialR1Error, match=r"SN001: missing label file\(s\) for \['AU20'\]"):
        convert("disfa", tmp_path, tmp_path / "out2", strict=True)
    (labels / "SN001_au20.txt").write_text("1,0\n2,0\n3,0\n")
    with pytest.raises(FacialR1Error, match="SN001_au9.txt:2: expected 'frame,intensity'"):
        convert("disfa", tmp_path, tmp_path / "out3", strict=True)


def test_bp4d(tmp_path):
    # AUCoding/AU_OCC/F001_T1.csv: columns named by number, "0" the frame (index_col=0) and column N
    # AU N, values 0/1/9 (CVI-SZU/ME-GraphAU tool/BP4D_image_label_process.py usecols "0", "1",
    # "2", "4", ...; OpenGraphAU/tool/dataset_process.py reads up to "39" and maps 9 to unknown).
    # The fixture's 0..39 range covers every column those readers use; the release's exact width
    # was not seen.
    occ = tmp_path / "AUCoding/AU_OCC"
    occ.mkdir(parents=True)
    au_cols = [str(n) for n in range(1, 40)]
    header = ",".join(["0", *au_cols])

    def row(frame, on=(), unknown=()):
        return ",".join([str(frame)] + ["9" if c in unknown else "1" if c in on else "0" for c in au_cols])
    (occ / "F001_T1.csv").write_text("\n".join([header, row(2440, on=("1", "12")), row(2441, unknown=("4",)),
                                                row(2442, on=("5", "3", "33"))]) + "\n")
    (occ / "M002_T2.csv").write_text("\n".join([header, row(7, on=("23", "24"), unknown=("19",))]) + "\n")
    (occ / "F007_T1.csv").write_text("\n".join([header, row(643, on=("6", "12")), row(644, on=("12",)), "644,x"]) + "\n")
    jpg(tmp_path / "F001/T1/2440.jpg")
    jpg(tmp_path / "F007/T1/0643.jpg")  # PyTorch-JAANet data/list/BP4D_part3_path.txt: BP4D/F007/T1/0643.jpg
    r = convert("bp4d", tmp_path, tmp_path / "out", folds=3)
    rows = {s["id"]: s for s in read_jsonl(tmp_path / "out/all.jsonl")}
    assert rows["bp4d-F001-T1-2440"]["AUs"] == ["AU1", "AU12"] and rows["bp4d-F001-T1-2440"]["image"] == "F001/T1/2440.jpg"
    assert "bp4d-F001-T1-2441" not in rows                      # unknown (9) in a standard AU: dropped
    assert rows["bp4d-F001-T1-2442"]["AUs"] == ["AU5", "AU33"]  # every coded FACS AU kept; "3" is no FACS code
    assert rows["bp4d-M002-T2-0007"]["AUs"] == ["AU23", "AU24"]  # 9 in a non-standard AU: unknown, never off
    assert rows["bp4d-M002-T2-0007"]["meta_info"]["unknown_aus"] == ["AU19"]
    assert rows["bp4d-F007-T1-0643"]["image"] == "F007/T1/0643.jpg"
    assert r["dropped_au_codes"] == {str(occ / "F001_T1.csv"): {"unknown": {"AU3": 1}, "not_scored": {}}}
    assert accounted(r) == {"a 9 (unknown) in a benchmark AU": 1,
                            "unreadable row (an integer frame and 0/1/9 AU values)": 1}
    assert r["folds"] == {"fold1": 2, "fold2": 2, "fold3": 1}  # F001 | F007 | M002, sorted
    # published folds (ME-GraphAU tool/BP4D_image_label_process.py BP4D_Sequence_split, the same as
    # PyTorch-JAANet data/list/BP4D_part{1,2,3}_path.txt): F001 part1, M002 part2, F007 part3
    assert r["paper_folds"] == {"paper_fold1_test": 2, "paper_fold1_train": 3, "paper_fold2_test": 1,
                                "paper_fold2_train": 4, "paper_fold3_test": 2, "paper_fold3_train": 3}
    (occ / "M002_T2.csv").write_text("Frame,1,2\n1,0,0\n")     # too few AU columns: the file's rows dropped
    r = convert("bp4d", tmp_path, tmp_path / "out2")
    assert accounted(r)["file without a '0,1,2,...' header naming the 12 benchmark AU columns"] == 1
    with pytest.raises(FacialR1Error, match="F007_T1.csv:4: unreadable row .* got '644,x'"):
        convert("bp4d", tmp_path, tmp_path / "out3", strict=True)
    (occ / "F007_T1.csv").unlink()
    with pytest.raises(FacialR1Error, match="M002_T2.csv:1: file without a '0,1,2,...' header"):
        convert("bp4d", tmp_path, tmp_path / "out4", strict=True)


# Lines of the released RAFAU_label.txt, as a published copy of it shows them
# (arvindhvetri/EmotionAI RAFAU_label.txt, 4,601 lines): L/R sides, T/B lip prefixes, an action
# descriptor (AD19), a lower-case prefix, combined prefixes (BL18, RB18), a repeated code, trailing
# and doubled spaces, null lines, and one token of no known form (L12L).
RAFAU_LINES = """0001.jpg 1+4+25
0003.jpg L12+24
0004.jpg null
0007.jpg 25 
0217.jpg 15+17+T24
0290.jpg 4+15+17+B22+T24
0485.jpg 9+AD19+24
0540.jpg 1+2+5+26+26
0582.jpg 5+B28
1978.jpg 4+7+9+17+t23
2321.jpg BL18+25
2936.jpg  1+2+25+26
2991.jpg 1+2+5+9+10+RB18+25
3127.jpg L6+L9+L10+L12L+25
4629.jpg L34
"""


def test_rafau_real_lines(tmp_path):
    # Readers: CVI-SZU/ME-GraphAU OpenGraphAU/tool/dataset_process.py (items[1].split('+'), skips
    # 'null', images '<name>'.zfill(4) + '_aligned.jpg'); today's converter stopped at 0217's T24.
    (tmp_path / "RAFAU_label.txt").write_text(RAFAU_LINES)
    jpg(tmp_path / "aligned/0001_aligned.jpg")
    r = convert("rafau", tmp_path, tmp_path / "out")
    got = {s["id"]: s["AUs"] for s in read_jsonl(tmp_path / "out/all.jsonl")}
    assert got == {"rafau-0001": ["AU1", "AU4", "AU25"], "rafau-0003": ["AU12", "AU24"], "rafau-0007": ["AU25"],
                   "rafau-0217": ["AU15", "AU17", "AU24"], "rafau-0290": ["AU4", "AU15", "AU17", "AU22", "AU24"],
                   "rafau-0485": ["AU9", "AU19", "AU24"], "rafau-0540": ["AU1", "AU2", "AU5", "AU26"],
                   "rafau-0582": ["AU5", "AU28"], "rafau-1978": ["AU4", "AU7", "AU9", "AU17", "AU23"],
                   "rafau-2321": ["AU18", "AU25"], "rafau-2936": ["AU1", "AU2", "AU25", "AU26"],
                   "rafau-2991": ["AU1", "AU2", "AU5", "AU9", "AU10", "AU18", "AU25"], "rafau-4629": ["AU34"]}
    assert accounted(r) == {"null: no AU coded (skipped, as the public readers do)": 1,
                            "unreadable AU code (line dropped, not guessed)": 1}
    assert r["dropped"]["unreadable AU code (line dropped, not guessed)"]["examples"] == [
        f"{tmp_path / 'RAFAU_label.txt'}:14: 'L12L'"]
    assert r["codes_normalised"] == {"L12 -> AU12": 1, "T24 -> AU24": 2, "B22 -> AU22": 1, "AD19 -> AU19": 1,
                                     "B28 -> AU28": 1, "t23 -> AU23": 1, "BL18 -> AU18": 1, "RB18 -> AU18": 1,
                                     "L34 -> AU34": 1}
    assert r["dropped_au_codes"] == {} and r["missing_images"] == 12
    with pytest.raises(FacialR1Error, match="RAFAU_label.txt:14: unreadable AU code .* got 'L12L'"):
        convert("rafau", tmp_path, tmp_path / "out2", strict=True)


def test_rafau_codes_facs_lacks(tmp_path):
    # codes outside the scored table: 3 (never assigned) and 62 (eyes right, not scored) are dropped
    # from their row and counted; a line left with no scored AU is dropped and counted
    (tmp_path / "RAFAU_label.txt").write_text("0004.jpg 4+62+3\n0005.jpg 62\n")
    r = convert("rafau", tmp_path, tmp_path / "out")
    assert [s["AUs"] for s in read_jsonl(tmp_path / "out/all.jsonl")] == [["AU4"]]
    assert r["dropped_au_codes"] == {str(tmp_path / "RAFAU_label.txt"): {"unknown": {"AU3": 1}, "not_scored": {"AU62": 2}}}
    assert accounted(r) == {"no scored FACS AU left on the line": 1}


def faba_record(task, i, source, answer, question):
    # the record shape of the EmoLA README (github.com/JackYFL/EmoLA): source, image, id, conversations, landmark
    rel = f"AffectNet/AffectNet_v2/{i}/{i:056x}"
    return {"source": source, "image": f"FABAInstruct/train/images/{rel}.jpg", "id": rel,
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
            "landmark": f"FABAInstruct/train/landmarks/{rel}.npy"}


def test_faba(tmp_path):
    # FABAInstruct/train/train_au_anno.json and train_emotion_anno.json, images relative to the
    # folder holding FABAInstruct/ (EmoLA README's tree and annotation demos)
    train = tmp_path / "data/FABAInstruct/train"
    train.mkdir(parents=True)
    au = [faba_record("au", 1194, "AffectNet", "This image depicts ... action units (AUs). Here are the AUs:\n\n"
                      "1. AU4 - Brow Lowerer: the eyebrows are drawn together.\n2. AU9 - Nose Wrinkler: ...\n"
                      "3. AU15 - Lip Corner Depressor: ...\n4. AU17 - Chin Raiser: ...",
                      "In this face, what are the discernible action units?\n<image>")]
    emotion = [faba_record("emotion", 1194, "AffectNet", "The person appears sad: the mouth corners are pulled down.",
                           "What is the emotion of this face?\n<image>"),
               faba_record("emotion", 916, "AffectNet", "A gentle, neutral expression; no overt joy, sadness, "
                           "anger, or surprise.", "What is the emotion of this face?\n<image>")]
    (train / "train_au_anno.json").write_text(json.dumps(au, indent=2))
    (train / "train_emotion_anno.json").write_text(json.dumps(emotion, indent=2))
    jpg(tmp_path / "data" / au[0]["image"])
    r = convert("faba", tmp_path / "data/FABAInstruct", tmp_path / "out")
    assert r["image_folder"] == str(tmp_path / "data") and r["written"] == {"train": 3}
    got = {s["id"]: s for s in read_jsonl(tmp_path / "out/train.jsonl")}
    a = got["faba-au-AffectNet/AffectNet_v2/1194/" + f"{1194:056x}"]
    assert a["AUs"] == ["AU4", "AU9", "AU15", "AU17"] and a["meta_info"]["task"] == "au" and a["labels"] == []
    assert a["question"] == "In this face, what are the discernible action units?"
    e = got["faba-emotion-AffectNet/AffectNet_v2/1194/" + f"{1194:056x}"]  # same image id, other task
    assert e["AUs"] is None and e["labels"] == ["Sadness"] and e["meta_info"]["label_source"] == "answer"
    several = got["faba-emotion-AffectNet/AffectNet_v2/916/" + f"{916:056x}"]
    assert several["labels"] == []  # names several emotions: no label invented
    assert r["missing_images"] == 1  # both tasks share image 1194; 916 is absent


def test_faba_eval_records_and_a_bad_record(tmp_path):
    # FABAInstruct/eval/eval_{au,emotion}_anno.json as EmoLA's eval script reads them
    # (JackYFL/EmoLA emollava/eval/eval_FABA.py: `img['image'], img['label'], img['gpt4']`,
    # img['landmark']; AU labels `AU_int_string.split(', ')`; emotion labels `int(img_label)` in
    # emotions2num's order, else `emotions2num[img_label]`), records without conversations. A record
    # without an image in train_* is dropped and counted; the folder still converts.
    root = tmp_path / "data/FABAInstruct"
    (root / "eval").mkdir(parents=True)
    (root / "train").mkdir()
    rel = "AffectNet/AffectNet_v2/77/" + "ab" * 28
    au = [{"source": "AffectNet", "image": f"FABAInstruct/eval/images/{rel}.jpg", "id": rel, "label": "1, 2, 4",
           "gpt4": "AU1 - Inner Brow Raiser ... AU2 ... AU4 ...", "landmark": f"FABAInstruct/eval/landmarks/{rel}.npy"}]
    emotion = [{"image": "FABAInstruct/eval/images/e1.jpg", "id": "e1", "label": 3, "gpt4": "The face looks angry."},
               {"image": "FABAInstruct/eval/images/e2.jpg", "id": "e2", "label": "Happiness", "gpt4": "A broad smile."}]
    (root / "eval/eval_au_anno.json").write_text(json.dumps(au))
    (root / "eval/eval_emotion_anno.json").write_text(json.dumps(emotion))
    train = [faba_record("emotion", 1, "AffectNet", "The person appears sad.", "What is the emotion?\n<image>"),
             {"id": "broken", "conversations": []}]
    (root / "train/train_emotion_anno.json").write_text(json.dumps(train))
    r = convert("faba", root, tmp_path / "out")
    assert r["written"] == {"test": 3, "train": 1}
    assert accounted(r) == {"unreadable record": 1}
    assert r["dropped"]["unreadable record"]["examples"] == [f"{root / 'train/train_emotion_anno.json'}: record 1: \"no 'image'\""]
    got = {s["id"]: s for s in read_jsonl(tmp_path / "out/test.jsonl")}
    a = got[f"faba-au-{rel}"]
    assert a["AUs"] == ["AU1", "AU2", "AU4"] and a["description"].startswith("AU1 - Inner")
    assert a["question"] == "What AUs are conveyed by this face?"  # eval_FABA.py's AU question
    assert got["faba-emotion-e1"]["labels"] == ["Anger"] and got["faba-emotion-e2"]["labels"] == ["Happiness"]
    assert got["faba-emotion-e1"]["meta_info"]["label_source"] == "label" and got["faba-emotion-e1"]["AUs"] is None
    with pytest.raises(FacialR1Error, match="train_emotion_anno.json: record 1: unreadable record"):
        convert("faba", root, tmp_path / "out2", strict=True)


def test_faba_explicit_fields_win(tmp_path):
    recs = [{"id": "e1", "image": "emo/1.jpg", "emotion": "happy", "conversations": [
                {"from": "human", "value": "<image>\nWhat is the facial expression?"},
                {"from": "gpt", "value": "The person is smiling, so happiness."}]},
            {"id": "a2", "image": "au/2.jpg", "AU": "AU1, AU2", "conversations": [
                {"from": "human", "value": "Which action units?"}, {"from": "gpt", "value": "Brows up."}]}]
    (tmp_path / "faba.json").write_text(json.dumps(recs))
    jpg(tmp_path / "emo/1.jpg")
    convert("faba", tmp_path / "faba.json", tmp_path / "out")
    got = read_jsonl(tmp_path / "out/all.jsonl")
    assert [(s["AUs"], s["labels"]) for s in got] == [(None, ["Happiness"]), (["AU1", "AU2"], [])]
    assert got[0]["question"] == "What is the facial expression?"


def test_fea20k_real_codes_convert_and_evaluate_without_losing_a_row(tmp_path):
    # FEA-20K lines: the README's fields, AU codes as "AU31", emotions in noun form ("anger"),
    # and the AUs the released files use (configs/config.json: AU8, AU19, AU30, AU31, AU33, ...)
    from facial_r1.evaluate import score

    lines = [
        {"id": "BP4D_F001_T1_2440", "dataset": "BP4D", "image": "BP4D/F001/T1/2440.jpg",
         "question": "<image>What is the emotion of this face?", "AUs": ["AU8", "AU19", "AU30", "AU31"],
         "labels": ["anger"], "description": "<think>lips toward each other (AU8) ...</think><answer>anger</answer>",
         "meta_info": {}},
        {"id": "RAF-AU_0002", "dataset": "RAF-AU", "image": "RAF-AU/0002.jpg", "question": "q",
         "AUs": ["L12", "R14B", "AU33"], "labels": ["happiness"], "description": "", "meta_info": {"k": "v"}},
        {"id": "x3", "dataset": "FABA", "image": "FABA/3.jpg", "question": "q", "AUs": ["AU3", "AU6"],
         "labels": ["sadness", "fear"], "description": "", "meta_info": {}},
    ]
    # and a line failing validation (a repeated id): dropped and counted, the file still converts
    (tmp_path / "FEA-Test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"id": "x3", "image": "a.jpg"}\n')
    r = convert("fea20k", tmp_path / "FEA-Test.jsonl", tmp_path / "out")
    assert r["written"] == {"FEA-Test": 3}
    assert accounted(r) == {"line failing FEA validation": 1}  # the 4th line repeats id x3
    assert r["dropped"]["line failing FEA validation"]["examples"][0].startswith(f"{tmp_path / 'FEA-Test.jsonl'}:4: \"duplicate id")
    assert r["codes_normalised"] == {"L12 -> AU12": 1, "R14B -> AU14": 1}
    assert r["dropped_au_codes"] == {str(tmp_path / "FEA-Test.jsonl"): {"unknown": {"AU3": 1}, "not_scored": {}}}
    got = read_jsonl(tmp_path / "out/FEA-Test.jsonl")
    assert [s["AUs"] for s in got] == [["AU8", "AU19", "AU30", "AU31"], ["AU12", "AU14", "AU33"], ["AU6"]]
    assert [s["labels"] for s in got] == [["Anger"], ["Happiness"], ["Sadness", "Fear"]]
    completions = ["<think>(AU8) (AU19) (AU30) (AU31)</think><answer>anger</answer>",
                   "<think>(AU12) (AU14) (AU33)</think><answer>happiness</answer>",
                   "<think>(AU6)</think><answer>fear</answer>"]  # the second label is not the emotion
    m = score(got, completions, "fea")
    assert m["n"] == m["n_au"] == m["n_emotion"] == 3
    assert m["au_f1"] == 1.0 and set(m["au"]["per_au"]) == {"AU6", "AU8", "AU12", "AU14", "AU19", "AU30", "AU31", "AU33"}
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_cli_convert_prints_the_summary(tmp_path, capsys, caplog):
    from facial_r1.cli import main

    (tmp_path / "RAFAU_label.txt").write_text(RAFAU_LINES)
    with caplog.at_level("INFO"):
        assert main(["data", "convert", "--format", "rafau", "--input", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == {"read": 15, "written": 13, "dropped": 2}
    assert "rafau: 15 rows read, 13 written (all 13), 2 dropped" in caplog.text
    assert "dropped 1: unreadable AU code (line dropped, not guessed)" in caplog.text
    assert json.loads((tmp_path / "out/convert_report.json").read_text())["rows"] == report["rows"]
    assert main(["data", "convert", "--format", "rafau", "--input", str(tmp_path), "--out", str(tmp_path / "o2"),
                 "--strict"]) == 1
    assert "unreadable AU code" in capsys.readouterr().err
    assert main(["data", "convert", "--format", "rafau", "--input", str(tmp_path), "--out", str(tmp_path / "o3"),
                 "--frame-offset", "-1"]) == 1
    assert "--frame-offset and --intensity-threshold apply to disfa" in capsys.readouterr().err


def test_unknown_format(tmp_path):
    with pytest.raises(FacialR1Error, match="unknown format 'ckplus'"):
        convert("ckplus", tmp_path, tmp_path / "out")


@pytest.mark.parametrize("layout", [("train_set", "val_set"), ("DATASET/train", "DATASET/test")])
def test_rafdb_folder_per_label(tmp_path, layout):
    # a copy re-packed for image-folder loaders: train_set/1 ... 7/ and val_set/ (or DATASET/train,
    # DATASET/test), labels in the release's order (1 Surprise ... 7 Neutral), as a README found by
    # the code index lays it out ("rafdb/train_set/1/  # Surprise class ... 7/  # Neutral class")
    train, test = (tmp_path / "raf" / d for d in layout)
    jpg(train / "1" / "train_00001_aligned.jpg", 10)
    jpg(train / "4" / "train_00002_aligned.jpg", 20)
    jpg(test / "7" / "test_0001_aligned.jpg", 30)
    jpg(test / "9" / "test_0002_aligned.jpg", 40)  # not a RAF-DB label: dropped and counted
    r = convert("rafdb", tmp_path / "raf", tmp_path / "out")
    assert r["written"] == {"train": 2, "test": 1}
    assert accounted(r) == {"image outside the label folders 1-7": 1}
    rows = read_jsonl(tmp_path / "out/train.jsonl") + read_jsonl(tmp_path / "out/test.jsonl")
    assert [(s["image"].split("/")[-2], s["labels"]) for s in rows] == [("1", ["Surprise"]), ("4", ["Happiness"]),
                                                                        ("7", ["Neutral"])]
    with pytest.raises(FacialR1Error, match="image outside the label folders 1-7"):
        convert("rafdb", tmp_path / "raf", tmp_path / "out2", strict=True)
