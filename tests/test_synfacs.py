import random
from collections import Counter

import numpy as np
import pytest

from facial_r1.data.schema import read_jsonl
from facial_r1.data.synfacs import (RENDERED_AUS, VISIBLE, describe, image_digest, make_sample, render_face,
                                    sample_aus, sample_identity, synth_faces)
from facial_r1.facs import EMOTIONS
from facial_r1.parse import parse_completion


def test_same_seed_same_bytes(tmp_path):
    a = synth_faces(tmp_path / "a", 12, seed=3)
    b = synth_faces(tmp_path / "b", 12, seed=3)
    assert a == b
    for name in ("train.jsonl", "test.jsonl", "images/000005.png"):
        assert image_digest(tmp_path / "a" / name) == image_digest(tmp_path / "b" / name)
    assert image_digest(tmp_path / "a/images/000005.png") != image_digest(tmp_path / "a/images/000006.png")


def test_files_and_reasoning_fraction(tmp_path):
    out = synth_faces(tmp_path, 40, seed=0, test_fraction=0.25, reasoning_fraction=0.5, preview=True)
    assert out == {"train": 30, "test": 10, "with_reasoning": 15}
    train, test = read_jsonl(tmp_path / "train.jsonl"), read_jsonl(tmp_path / "test.jsonl")
    assert sum(bool(s["description"]) for s in train) == 15
    assert all(s["description"] for s in test)
    assert (tmp_path / "preview.png").is_file()


NEUTRAL_POSE = dict(angle=0.0, scale=1.0, dx=0.0, dy=0.0, light=1.0, light_dir=0.0, noise=0.0)


def brow_rows(im):
    """Rows of the (blue) brow pixels."""
    a = np.asarray(im).astype(int)
    ys, _ = np.nonzero((a[..., 2] > 150) & (a[..., 0] < 80) & (a[..., 1] < 80))
    return ys


def corner_y(im):
    """Mean row of the lip pixels in the 4 leftmost lip columns (the left mouth corner)."""
    a = np.asarray(im).astype(int)[130:220]
    ys, xs = np.nonzero((a[..., 0] > 120) & (a[..., 1] < 100) & (a[..., 2] < 100))
    left = xs <= xs.min() + 3
    return ys[left].mean() + 130


def face(au=None, v=1.0, unilateral=False):
    from dataclasses import replace

    from facial_r1.data.synfacs import Pose

    ident = replace(sample_identity(random.Random(7)), hair_style=2, brow_color=(20, 20, 200),
                    background=(128, 128, 128))  # bald, blue brows, grey background
    return render_face({au: v} if au else {}, ident, Pose(**NEUTRAL_POSE), 224, unilateral)


def test_au12_raises_mouth_corners():
    # left mouth-corner region: lip pixels sit higher (smaller y) with AU12
    assert corner_y(face("AU12")) < corner_y(face()) - 5


def test_au15_lowers_mouth_corners():
    assert corner_y(face("AU15")) > corner_y(face()) + 5


def test_au26_opens_the_mouth():
    def mouth_dark(im):
        a = np.asarray(im).astype(int)[140:210, 90:134]
        return int(((a[..., 0] < 80) & (a[..., 1] < 40)).sum())
    assert mouth_dark(face("AU26")) > mouth_dark(face()) + 50


@pytest.mark.parametrize("au", ["AU1", "AU2"])
def test_brow_raisers_lift_brows(au):
    # brow pixels (dark) above the eyes move up
    assert brow_rows(face(au)).min() < brow_rows(face()).min() - 4


def test_au4_lowers_brows():
    assert brow_rows(face("AU4")).mean() > brow_rows(face()).mean() + 3


def test_every_rendered_au_changes_the_image():
    base = np.asarray(face()).astype(int)
    for au in RENDERED_AUS:
        diff = np.abs(np.asarray(face(au)).astype(int) - base).sum(axis=2)
        assert (diff > 40).sum() > 40, au


def test_unilateral_contempt_is_asymmetric():
    im = np.asarray(face("AU12", unilateral=True)).astype(int)
    assert np.abs(im - im[:, ::-1]).sum() > np.abs(np.asarray(face()).astype(int) -
                                                   np.asarray(face())[:, ::-1].astype(int)).sum()


def test_label_and_au_distributions():
    samples = [make_sample(i, 0, 32)[0] for i in range(800)]
    counts = Counter(s["labels"][0] for s in samples)
    assert set(counts) == set(EMOTIONS)
    assert all(60 <= c <= 140 for c in counts.values())  # uniform over 8 emotions: ~100 each
    happy = [s for s in samples if s["labels"] == ["Happiness"]]
    assert sum("AU12" in s["AUs"] for s in happy) / len(happy) > 0.75
    neutral = [s for s in samples if s["labels"] == ["Neutral"]]
    assert sum(not s["AUs"] for s in neutral) / len(neutral) > 0.75
    for s in samples:  # listed AUs are exactly those over the visibility threshold
        assert s["AUs"] == sorted((a for a, v in s["meta_info"]["intensity"].items() if v >= VISIBLE),
                                  key=lambda a: int(a[2:]))


def test_description_cites_exactly_the_true_aus():
    rng = random.Random(0)
    for _ in range(300):
        emotion = rng.choice(EMOTIONS)
        intensity, uni = sample_aus(emotion, rng)
        aus = sorted(a for a, v in intensity.items() if v >= VISIBLE)
        a = parse_completion(describe(aus, emotion, rng, uni))
        assert a.format_valid and set(a.aus) == set(aus) and a.answer == emotion
