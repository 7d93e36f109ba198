"""The training mixture: rows read and validated, the sampling rule applied to the rows, and only
the sampled rows' images looked at, by their header."""

import json

import pytest
from PIL import Image

from facial_r1.data import mixture, schema
from facial_r1.errors import FacialR1Error


def rows(tmp_path, n, name="a"):
    folder = tmp_path / f"img_{name}"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "ok.png")
    lines = [json.dumps({"id": f"{name}{i}", "image": "ok.png", "AUs": ["AU4"], "labels": ["Anger"]}) for i in range(n)]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, folder


@pytest.mark.parametrize("rule, expected", [
    ("all", 10), ("first:3", 3), ("random:4", 4), ("random:50", 10),  # at most what the file has
])
def test_sampling_rules(tmp_path, rule, expected):
    path, folder = rows(tmp_path, 10)
    got, problems = mixture.load_mixture([str(path)], [str(folder)], [rule], seed=1)
    assert len(got) == expected and not problems
    again, _ = mixture.load_mixture([str(path)], [str(folder)], [rule], seed=1)
    assert [s["id"] for s in got] == [s["id"] for s in again]  # seeded


def test_only_the_sampled_rows_images_are_looked_at(tmp_path, monkeypatch):
    path, folder = rows(tmp_path, 1000)
    opened = []
    real = schema.check_image_header
    monkeypatch.setattr(schema, "check_image_header", lambda p, sid="?": opened.append(sid) or real(p, sid))
    monkeypatch.setattr(schema, "load_image", lambda *a, **k: pytest.fail("decoded an image"))
    got, _ = mixture.load_mixture([str(path)], [str(folder)], ["random:25"], seed=0)
    assert len(got) == 25 and sorted(opened) == sorted(s["id"] for s in got)


def test_a_bad_image_is_skipped_by_header_and_a_truncated_one_waits_for_its_batch(tmp_path):
    path, folder = rows(tmp_path, 3)
    (folder / "text.png").write_text("not an image")
    import os

    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(folder / "noise.png")
    whole = (folder / "noise.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[:len(whole) // 2])  # a valid header, half the pixels
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("ok.png", "text.png")
    lines[2] = lines[2].replace("ok.png", "cut.png")
    path.write_text("\n".join(lines) + "\n")
    got, problems = mixture.load_mixture([str(path)], [str(folder)])
    assert [s["id"] for s in got] == ["a0", "a2"]  # the truncated file's header reads
    assert len(problems) == 1 and "sample a1" in problems[0] and "not a format PIL knows" in problems[0]
    _, errors = schema.read_samples_with_images(path, [folder], skip_bad=True)  # data validate decodes all
    assert any("sample a2" in e for e in errors)


def test_rules_and_folders_must_match_the_files(tmp_path):
    path, folder = rows(tmp_path, 2)
    with pytest.raises(FacialR1Error, match="2 data_sampling rules for 1 data_paths"):
        mixture.load_mixture([str(path)], [str(folder)], ["all", "all"])
