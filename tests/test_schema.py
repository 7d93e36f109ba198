import io
import json
import os

import pytest
from PIL import Image

from facial_r1.data.schema import (ReadReport, load_image, read_jsonl, read_samples_with_images, resolve_image,
                                   to_dataset, write_jsonl)
from facial_r1.errors import FacialR1Error, ImageError


def sample(i, **kw):
    base = {"id": f"s{i}", "dataset": "t", "image": f"{i}.png", "question": "q", "AUs": ["au01", "AU 4"],
            "labels": ["happy"], "description": "", "meta_info": {}}
    return {**base, **kw}


def write_lines(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_round_trip_and_normalisation(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [sample(1), sample(2, AUs=None, labels=[])])
    assert f == 2
    got = read_jsonl(tmp_path / "a.jsonl")
    assert got[0]["AUs"] == ["AU1", "AU4"] and got[0]["labels"] == ["Happiness"]
    assert got[1]["AUs"] is None and got[1]["labels"] == []
    ds = to_dataset(got)
    assert ds.num_rows == 2 and set(ds.column_names) >= {"id", "AUs", "labels", "meta_info"}


@pytest.mark.parametrize("bad, message", [
    ("{not json", "2: invalid JSON"),
    (sample(9, AUs=["brow"]), "2: malformed AU code 'brow'"),
    (sample(9, AUs=["AU12x"]), "2: malformed AU code 'AU12x'"),
    ({**sample(9), "image": "a\x00b.png"}, "2: sample s9: image path .* contains a NUL byte"),
    ('{"id": "s9", "image": "a\\ud800.png"}', "2: sample s9: image path .* is not valid Unicode"),  # lone surrogate
    (sample(9, labels=["bored"]), "2: unknown emotion label 'bored'"),
    ({"id": "x"}, "2: missing required field"),
    ({**sample(9), "extra": 1}, "2: unknown field"),
    (sample(1), "2: duplicate id 's1' \\(first on line 1\\)"),
    ("[1, 2]", "2: expected a JSON object"),
])
def test_bad_line_names_file_and_line(tmp_path, bad, message):
    f = write_lines(tmp_path / "b.jsonl", [sample(1), bad, sample(3)])
    with pytest.raises(FacialR1Error, match=f"b.jsonl:{message}"):
        read_jsonl(f)
    report = ReadReport(str(f))
    got = read_jsonl(f, skip_bad=True, report=report)
    assert [s["id"] for s in got] == ["s1", "s3"] and report.n_skipped == 1


def test_real_facs_codes_validate_and_unknown_ones_are_counted_not_fatal(tmp_path):
    f = write_lines(tmp_path / "c.jsonl", [
        sample(1, AUs=["AU8", "AU19", "AU30", "AU31"]),  # FACS codes the released data uses
        sample(2, AUs=["L12", "R14B", "au 25", "12B"]),  # sides and intensities
        sample(3, AUs=["AU3", "AU12", "AU47", "AU3"]),   # AU3/AU47 are not FACS codes: dropped, counted
        sample(4, AUs=["AU51", "AU62", "AU1"]),          # head/eye codes: known, not scored
    ])
    report = ReadReport(str(f))
    got = read_jsonl(f, report=report)
    assert [s["AUs"] for s in got] == [["AU8", "AU19", "AU30", "AU31"], ["AU12", "AU14", "AU25"], ["AU12"], ["AU1"]]
    assert report.unknown_aus == {"AU3": 2, "AU47": 1} and report.not_scored_aus == {"AU51": 1, "AU62": 1}
    assert report.n_lines == 4 and report.n_skipped == 0


def test_image_paths_are_confined(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "ok.png")
    (tmp_path / "outside.png").write_bytes((root / "ok.png").read_bytes())
    os.symlink(tmp_path / "outside.png", root / "link.png")
    assert resolve_image("ok.png", [root]) == (root / "ok.png").resolve()
    for bad, msg in [("/etc/passwd", "absolute"), ("../outside.png", "escapes"), ("link.png", "escapes"),
                     ("nope.png", "not found")]:
        with pytest.raises(FacialR1Error, match=f"sample s7: .*{msg}"):
            resolve_image(bad, [root], "s7")


def _png(size=(300, 300), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("data, kwargs, kind, message", [
    # not an image at all
    (b"not an image", {}, "not_image", "sample s1: image.*: cannot read image"),
    # a PNG cut short: the header is fine, decoding fails
    (_png()[:60], {}, "corrupt", "cannot read image"),
    # over the pixel limit, refused on the header
    (_png(), {"max_pixels": 10_000}, "too_large", "sample s1: .*300x300, over the 10000 pixel limit"),
    # a real image in a format the caller does not accept
    (_png(), {"formats": {"JPEG"}}, "format", "is PNG; accepted: JPEG"),
])
def test_bad_images_raise_with_their_kind(tmp_path, data, kwargs, kind, message):
    (tmp_path / "x.png").write_bytes(data)
    for source in (tmp_path / "x.png", data):  # a file and the same bytes
        with pytest.raises(ImageError, match=message) as e:
            load_image(source, "s1", **kwargs)
        assert e.value.kind == kind


def test_exif_rotation_is_applied():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    Image.new("RGB", (40, 20), "red").save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue(), "s1").size == (20, 40)


def test_image_bytes_load_as_rgb():
    assert load_image(_png((5, 4)), "s1", formats={"PNG"}).size == (5, 4)


def test_read_with_images_skips_and_reports(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "1.png")
    (tmp_path / "2.png").write_bytes(b"junk")
    f = write_jsonl(tmp_path / "c.jsonl", [sample(1), sample(2), sample(3)])
    assert f == 3
    good, errors = read_samples_with_images(tmp_path / "c.jsonl", [tmp_path], skip_bad=True)
    assert [s["id"] for s in good] == ["s1"]
    assert len(errors) == 2 and "sample s2" in errors[0] and "sample s3" in errors[1]


@pytest.mark.parametrize("fmt, size, max_side, expected", [
    ("JPEG", (3200, 2400), 1600, (1600, 1200)),  # reduced (a JPEG via its draft, then one resize)
    ("PNG", (3000, 1000), 1600, (1600, 533)),     # reduced by the resize alone
    ("PNG", (800, 600), 1600, (800, 600)),        # small: untouched
])
def test_load_image_reduces_to_max_side_and_records_the_scale(fmt, size, max_side, expected):
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 60, 30)).save(buf, format=fmt)
    im = load_image(buf.getvalue(), "s", max_side=max_side)
    assert im.size == expected and im.info["scale"] == pytest.approx(max(size) / max(expected))


def test_the_pixel_cap_counts_a_jpegs_reduced_draft():
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), "white").save(buf, format="JPEG")  # 12 MP header, 3 MP at 1/2 scale
    with pytest.raises(ImageError, match="over the 8000000 pixel limit"):
        load_image(buf.getvalue(), "s", max_pixels=8_000_000)  # decoded in full: refused
    assert load_image(buf.getvalue(), "s", max_pixels=8_000_000, max_side=1600).size == (1600, 1200)
