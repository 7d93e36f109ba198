import json
import shutil
import subprocess
import sys

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

from facial_r1.analyze import analyze
from facial_r1.errors import FacialR1Error

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A real photo and one of each bad input."""
    d = tmp_path_factory.mktemp("inputs")
    shutil.copy(PHOTO, d / "a_photo.jpg")
    (d / "b_notes.txt").write_text("not an image")
    (d / "c_corrupt.jpg").write_bytes(open(PHOTO, "rb").read()[:400])
    Image.new("RGB", (200, 200), (90, 120, 200)).save(d / "d_no_face.png")
    Image.new("1", (6400, 6400)).save(d / "e_huge.png")  # 41 MPixel, over the 40 MPixel limit
    return d


def test_folder_gives_the_face_and_an_error_per_bad_input(folder):
    rows = list(analyze([str(folder)]))
    by_file = {r["file"].rsplit("/", 1)[1]: r for r in rows}
    assert list(by_file) == ["a_photo.jpg", "b_notes.txt", "c_corrupt.jpg", "d_no_face.png", "e_huge.png"]
    face = by_file["a_photo.jpg"]
    assert face["frame"] is None and len(face["box"]) == 4 and face["reasoning"].startswith("<think>")
    assert by_file["b_notes.txt"]["error"] == "not an image or video file"
    assert "cannot read image" in by_file["c_corrupt.jpg"]["error"]
    assert by_file["d_no_face.png"]["error"] == "no face found"
    assert "over the 40000000 pixel limit" in by_file["e_huge.png"]["error"]


def test_group_photo_gives_one_row_per_face(tmp_path):
    """`analyze` on a 1000x667 group photo of five frontal faces 90-110 px wide finds all five."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location("face_detection", "benchmarks/face_detection.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    image, truth = bench.group_photo(random.Random(7), 100, (1000, 667), n_faces=5, max_angle=10,
                                     faces=("astronaut.jpg", "grace_hopper.jpg"))
    image.save(tmp_path / "group.jpg", quality=90)
    rows = list(analyze([str(tmp_path / "group.jpg")]))
    assert len(rows) == 5 and bench.match([r["box"] for r in rows], truth) == (5, 0)
    assert all(r["emotion"] in ("Happiness", "Neutral") and "error" not in r for r in rows)


def test_video_frames_are_sampled(tmp_path):
    import cv2

    frame = np.asarray(Image.open(PHOTO).convert("RGB"))[:, :, ::-1]
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (frame.shape[1], frame.shape[0]))
    for _ in range(10):  # 2 s at 5 fps
        writer.write(frame)
    writer.release()
    rows = list(analyze([str(path)], every=1.0))
    assert [r["frame"] for r in rows] == [0, 5] and all("box" in r for r in rows)


def test_vlm_backend_runs_the_checkpoint_on_face_crops(tiny_model):
    rows = list(analyze([PHOTO, PHOTO], backend="vlm", model=str(tiny_model), batch_size=2, max_new_tokens=8))
    assert len(rows) == 2 and rows[0]["box"] == rows[1]["box"]
    assert all(isinstance(r["reasoning"], str) and "aus" in r for r in rows)


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "magic"}, "unknown backend 'magic'"),
    ({"backend": "vlm"}, "the vlm backend needs --model"),
    ({"min_face": 2}, "min_face must be at least 8 px, got 2"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(FacialR1Error, match=message):
        list(analyze([PHOTO], **kwargs))


def test_cli_prints_json_lines_and_keeps_going(folder):
    done = subprocess.run([sys.executable, "-m", "facial_r1.cli", "analyze", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sum("box" in r for r in rows) == 1 and sum("error" in r for r in rows) == 4
    assert "b_notes.txt: not an image or video file" in done.stderr
