"""The page in a real headless Chromium (Debian's `chromium` + `chromium-driver`; `make test` installs
them). Set FACIAL_R1_SCREENSHOT=path.png to keep the screenshot (the README's comes from here)."""

import base64
import importlib.util
import json
import os
import random
import shutil
import urllib.request

import matplotlib.cbook
import pytest
from PIL import Image

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,860"]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):  # a failure, not a skip: `make test` installs both
        pytest.fail("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


def upload(browser, url, path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    browser.find_element(By.ID, "file").send_keys(str(path))
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 120).until(lambda _: status.get_attribute("data-state") in ("done", "error"))
    return status


def api(url, path):
    data = base64.b64encode(open(path, "rb").read()).decode()
    body = json.dumps({"images": [{"name": os.path.basename(path), "data": data}]}).encode()
    request = urllib.request.Request(url + "/v1/analyze", body, {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=120))["results"]


def two_faces(tmp_path):
    """The photo beside its mirror image: two faces, to check one card and one box per face."""
    from PIL import ImageOps

    photo = Image.open(PHOTO).convert("RGB")
    both = Image.new("RGB", (photo.width * 2, photo.height))
    both.paste(photo, (0, 0))
    both.paste(ImageOps.mirror(photo), (photo.width, 0))
    both.save(tmp_path / "two_faces.jpg")
    return tmp_path / "two_faces.jpg"


def group(tmp_path):
    """A 1000x667 group photo of six real faces 70 px wide (benchmarks/face_detection.py), small
    enough that the Face Landmarker alone found none of them."""
    spec = importlib.util.spec_from_file_location("face_detection", "benchmarks/face_detection.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    image, _ = bench.group_photo(random.Random(0), 70, (1000, 667), n_faces=6, max_angle=15)
    image.save(tmp_path / "group.jpg", quality=92)
    return tmp_path / "group.jpg"


def with_profile(tmp_path):
    """Grace Hopper (frontal, colour) beside the gray camera operator in profile (scikit-image's
    camera(), tests/data/photos): a profile face gets its card and its box too."""
    front, profile = Image.open(PHOTO).convert("RGB"), Image.open("tests/data/photos/camera.jpg").convert("RGB")
    both = Image.new("RGB", (front.width + profile.width, max(front.height, profile.height)), "white")
    both.paste(front, (0, 0))
    both.paste(profile, (front.width, 0))
    both.save(tmp_path / "with_profile.jpg", quality=92)
    return tmp_path / "with_profile.jpg"


def sideways(tmp_path):
    """The photo stored rotated, with the EXIF orientation that turns it upright for viewing."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.open(PHOTO).convert("RGB").rotate(90, expand=True).save(tmp_path / "sideways.jpg", exif=exif)
    return tmp_path / "sideways.jpg"


@pytest.mark.parametrize("image, faces", [("photo", 1), ("two_faces", 2), ("sideways", 1), ("group", 6),
                                          ("with_profile", 2)])
def test_the_page_shows_what_the_api_answers(browser, landmarks_server, tmp_path, image, faces):
    from selenium.webdriver.common.by import By

    path = {"photo": lambda _: PHOTO, "two_faces": two_faces, "sideways": sideways, "group": group,
            "with_profile": with_profile}[image](tmp_path)
    status = upload(browser, landmarks_server, path)
    noun = "face" if faces == 1 else "faces"
    assert status.get_attribute("data-state") == "done" and status.text == f"{faces} {noun} in {os.path.basename(path)}."
    shown = [{"emotion": card.get_attribute("data-emotion"),
              "aus": [li.get_attribute("data-au") for li in card.find_elements(By.CSS_SELECTOR, ".au")],
              "names": [li.text for li in card.find_elements(By.CSS_SELECTOR, ".au")],
              "reasoning": card.find_element(By.CSS_SELECTOR, ".reasoning").text}
             for card in browser.find_elements(By.CSS_SELECTOR, ".face")]
    answer = api(landmarks_server, path)
    assert len(answer) == faces
    assert [{"emotion": s["emotion"], "aus": s["aus"], "reasoning": s["reasoning"]} for s in shown] == \
        [{"emotion": r["emotion"], "aus": r["aus"], "reasoning": r["reasoning"]} for r in answer]
    facs = json.load(urllib.request.urlopen(landmarks_server + "/v1/facs"))
    for s, r in zip(shown, answer):  # every read face has at least one AU, each shown with its FACS name
        assert (s["aus"] or r.get("error")) and s["names"] == [f"{au} {facs[au]['name']}" for au in s["aus"]]
    canvas = browser.find_element(By.ID, "view")  # the image, upright at full size, with the boxes
    upright = Image.open(PHOTO).size if image == "sideways" else Image.open(path).size
    if image == "sideways":  # the face is found where it is in the upright photo (JPEG re-encoding: +-3 px)
        assert all(abs(a - b) <= 3 for a, b in zip(answer[0]["box"], api(landmarks_server, PHOTO)[0]["box"]))
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == upright
    colors = browser.execute_script("return COLORS;")
    for i, face in enumerate(answer):  # each face's box is drawn in its card's colour: read its left edge
        x0, y0, _, y1 = face["box"]
        pixel = browser.execute_script(
            "return Array.from(document.getElementById('view').getContext('2d')"
            ".getImageData(arguments[0], arguments[1], 1, 1).data);", x0, (y0 + y1) // 2)
        want = colors[i % len(colors)].lstrip("#")
        assert all(abs(p - int(want[k:k + 2], 16)) <= 8 for p, k in zip(pixel[:3], (0, 2, 4))), (i, pixel, want)

    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] >= 1000
    if image == "group" and os.environ.get("FACIAL_R1_SCREENSHOT"):
        shutil.copy(shot, os.environ["FACIAL_R1_SCREENSHOT"])


def test_the_page_shows_a_refusal(browser, landmarks_server, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    status = upload(browser, landmarks_server, fake)
    assert status.get_attribute("data-state") == "error"
    assert status.text.startswith("Refused (415): sample notes.png: image: cannot read image")
