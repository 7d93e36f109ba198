import matplotlib.cbook
import pytest
from PIL import Image

from facial_r1.errors import FacialR1Error
from facial_r1.landmarks import LandmarkAnalyser, blendshapes_to_aus, emotion_from_aus
from facial_r1.parse import parse_completion


@pytest.mark.parametrize("scores, aus", [
    ({"mouthSmileLeft": 0.8, "mouthSmileRight": 0.2, "cheekSquintLeft": 0.5}, {"AU12": 0.8, "AU6": 0.5}),
    ({"browInnerUp": 0.39}, {}),                       # just under the 0.4 threshold
    ({"browInnerUp": 0.4, "jawOpen": 0.9}, {"AU1": 0.4, "AU26": 0.9}),
    ({"eyeLookUpLeft": 0.9}, {}),                      # gaze is not an AU
])
def test_blendshapes_to_aus(scores, aus):
    assert blendshapes_to_aus(scores) == aus


@pytest.mark.parametrize("aus, emotion", [
    (["AU6", "AU12"], "Happiness"),
    (["AU12"], "Happiness"),         # half of Happiness and half of Contempt: the tie goes to Happiness
    (["AU12", "AU14"], "Contempt"),
    (["AU1", "AU2", "AU5", "AU26"], "Surprise"),
    (["AU4", "AU7"], "Anger"),       # 2 of 4
    (["AU7"], "Neutral"),            # a quarter of a prototype is not enough
    ([], "Neutral"),
])
def test_emotion_from_aus(aus, emotion):
    assert emotion_from_aus(aus) == emotion


@pytest.fixture(scope="module")
def analyser():
    with LandmarkAnalyser() as a:
        yield a


def test_real_photo_gives_one_face_in_the_output_format(analyser):
    image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    faces = analyser.analyse(image)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    # the face sits in the middle of this portrait and fills a third of its width
    assert 0 < x0 < image.width / 2 < x1 < image.width and 0 < y0 < image.height / 2 < y1 < image.height
    assert 0.25 < (x1 - x0) / image.width < 0.6
    parsed = parse_completion(faces[0].reasoning)
    assert parsed.format_valid and set(parsed.aus) == set(faces[0].aus) and parsed.answer == faces[0].emotion


def test_no_face_gives_no_result(analyser):
    assert analyser.analyse(Image.new("RGB", (240, 240), (90, 120, 200))) == []


def test_missing_user_model_is_a_clear_error(tmp_path):
    with pytest.raises(FacialR1Error, match="face landmarker model .*nope.task not found"):
        LandmarkAnalyser(tmp_path / "nope.task")


def _emotion_only_set(tmp_path):
    """A FER-style file: one real photo and one face-less image, emotion labels only."""
    import json
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), images / "gh.jpg")
    Image.new("RGB", (64, 64), (200, 200, 200)).save(images / "blank.png")
    rows = [{"id": "r1", "dataset": "rafdb", "image": "images/gh.jpg", "question": "q", "AUs": None,
             "labels": ["Happiness"], "description": "", "meta_info": {}},
            {"id": "r2", "dataset": "rafdb", "image": "images/blank.png", "question": "q", "AUs": None,
             "labels": ["Neutral"], "description": "", "meta_info": {}},
            {"id": "r3", "dataset": "disfa", "image": "images/gh.jpg", "question": "q", "AUs": ["AU12"],
             "labels": [], "description": "", "meta_info": {}}]
    data = tmp_path / "fer.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_autolabel_fills_missing_aus_and_marks_them(tmp_path):
    from facial_r1.data.schema import read_jsonl
    from facial_r1.landmarks import autolabel

    data = _emotion_only_set(tmp_path)
    counts = autolabel(str(data), [str(tmp_path)], str(tmp_path / "out.jsonl"))
    assert counts == {"labelled": 1, "kept_as_is": 1, "no_face": 1, "unreadable": 0}
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert rows["r1"]["AUs"] == ["AU7"]  # Grace Hopper's squint (see README: threshold 0.4)
    assert rows["r1"]["meta_info"]["au_pseudo_label"]["source"] == "mediapipe-blendshapes"
    assert rows["r2"]["AUs"] is None and rows["r3"]["AUs"] == ["AU12"]
    assert "au_pseudo_label" not in rows["r3"]["meta_info"]


def test_eval_baseline_row_from_landmarks(tmp_path):
    from facial_r1 import evaluate

    data = _emotion_only_set(tmp_path)
    m = evaluate.main(None, str(data), [str(tmp_path)], "rafdb", str(tmp_path / "eval"), backend="landmarks")
    # r1 answered Neutral (label Happiness), r2 has no face (empty answer, label Neutral): both wrong
    assert m["n"] == 3 and m["accuracy"] == 0.0 and m["format_rate"] == pytest.approx(2 / 3)
