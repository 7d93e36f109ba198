"""Hostile load on `facial-r1 serve`, loopback only, bounded in count and time.

    OMP_NUM_THREADS=1 python benchmarks/serve_abuse.py [--n 200] [--clients 32] [--model CKPT]

Per backend (landmarks; the VLM on a fresh tiny model unless --model), a child server started as a
user starts it gets N mixed requests from C concurrent clients: photos (grace_hopper.jpg), 39 MP
flat PNGs, decompression bombs (64 MP declared in a few KB), truncated JPEGs, junk bytes and 9
images in one request, plus clients that hang up mid-upload and mid-wait. It prints, per input
kind, the status codes and p50/p99 latency, then the server's peak RSS against the documented
bound (`serve.memory_bound`), whether /healthz is ok at the end, and whether every photo that got
a 200 got what `facial-r1 analyze` prints for it.

Pass: peak RSS under the bound; good inputs answered 200 or 503 with Retry-After, never another
5xx; healthy at the end; no good answer lost or wrong.
"""

import argparse
import io
import json
import os
import random
import socket
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import matplotlib.cbook
from PIL import Image

from facial_r1 import tiny
from facial_r1.analyze import analyze
from facial_r1.serve import Limits, memory_bound, peak_rss_bytes, subprocess_server

PHOTO_PATH = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
PHOTO = open(PHOTO_PATH, "rb").read()
BOUNDARY = "facialr1abuse"


def big_photo() -> bytes:
    """The photo upscaled to 5400 x 4000 (21.6 MP) JPEG: decoded at 1/2 scale, then reduced."""
    buf = io.BytesIO()
    Image.open(PHOTO_PATH).resize((5400, 4000)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png(size, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 0 if mode == "1" else (200, 190, 180)).save(buf, format="PNG")
    return buf.getvalue()


KINDS = {  # kind -> (files of one request, is it a good input)
    "photo": ([("photo.jpg", PHOTO)], True),
    "photo_21mp_jpeg": ([("big.jpg", big_photo())], True),
    "flat_7.8mp_png": ([("flat.png", png((3400, 2300)))], True),  # under the cap: decoded in full, then reduced
    "flat_39mp_png": ([("flat.png", png((7000, 5600)))], False),
    "bomb_64mp": ([("bomb.png", png((8000, 8000), "1"))], False),
    "truncated_jpeg": ([("cut.jpg", PHOTO[: len(PHOTO) // 2])], False),
    "junk": ([("junk.jpg", random.Random(0).randbytes(4096))], False),
    "nine_images": ([(f"p{i}.jpg", PHOTO) for i in range(9)], False),
}


def body(files) -> bytes:
    parts = [(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post(url: str, kind: str, retries: int = 30) -> dict:
    """One request as a well-behaved client sends it: a 503 with Retry-After is retried after that
    many seconds (at most `retries` times); the final status is reported, with the retries."""
    start, data = time.perf_counter(), body(KINDS[kind][0])
    for attempt in range(retries + 1):
        request = urllib.request.Request(url + "/v1/analyze", data,
                                         {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        try:
            with urllib.request.urlopen(request, timeout=300) as reply:
                status, payload, retry = reply.status, json.load(reply), None
        except urllib.error.HTTPError as e:
            status, payload, retry = e.code, None, e.headers.get("Retry-After")
        except OSError as e:  # refused or reset: counted, never hidden
            status, payload, retry = f"error:{getattr(e, 'reason', e)}", None, None
        if not (status == 503 and retry) or attempt == retries:
            break
        time.sleep(float(retry))
    return {"kind": kind, "status": status, "seconds": time.perf_counter() - start, "payload": payload,
            "retry": retry, "retries": attempt}


def hang_up(url: str, when: str) -> dict:
    """A client that sends half an upload and leaves ("upload"), or all of it and leaves at once ("wait")."""
    host, port = url.removeprefix("http://").split(":")
    data = body(KINDS["photo"][0])
    head = (f"POST /v1/analyze HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + (data[: len(data) // 2] if when == "upload" else data))
        time.sleep(0.05)
    return {"kind": f"hang_up_mid_{when}", "status": "closed", "seconds": 0.0, "payload": None, "retry": None}


def attack(url: str, n: int, clients: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    plan = [rng.choice(list(KINDS)) for _ in range(n)] + ["hang_up_mid_upload"] * 10 + ["hang_up_mid_wait"] * 10
    rng.shuffle(plan)

    def one(kind):
        return hang_up(url, kind.rsplit("_", 1)[1]) if kind.startswith("hang_up") else post(url, kind)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, plan))


def report(name: str, url: str, results: list[dict], expected: list[dict], base: int, limits: Limits) -> bool:
    peak = peak_rss_bytes(url.pid)[1]
    bound = memory_bound(limits, base)
    health = json.load(urllib.request.urlopen(url + "/healthz"))
    print(f"\n### {name}\n")
    print("| input | requests | final status codes | 503 retries | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for kind in [*KINDS, "hang_up_mid_upload", "hang_up_mid_wait"]:
        rows = [r for r in results if r["kind"] == kind]
        if not rows:
            continue
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(count(r["status"] for r in rows).items(), key=str))
        secs = sorted(r["seconds"] for r in rows)
        q = statistics.quantiles(secs, n=100, method="inclusive") if len(secs) > 1 else [secs[0]] * 99
        timing = "– | –" if kind.startswith("hang_up") else f"{q[49] * 1000:.0f} | {q[98] * 1000:.0f}"
        print(f"| {kind} | {len(rows)} | {codes} | {sum(r.get('retries', 0) for r in rows)} | {timing} |")
    good = [r for r in results if KINDS.get(r["kind"], (0, False))[1]]
    bad_good = [r for r in good if r["status"] != 200 and not (r["status"] == 503 and r["retry"])]
    # photo: exactly what `analyze` prints; the big photo: its one face found; the flat PNG: no face
    want = {"photo": lambda res: res == expected, "photo_21mp_jpeg": lambda res: len(res) == 1 and "box" in res[0],
            "flat_7.8mp_png": lambda res: [r.get("error") for r in res] == ["no face found"]}
    wrong = [r for r in good if r["status"] == 200 and not want[r["kind"]](r["payload"]["results"])]
    ok = peak <= bound and not bad_good and not wrong and health["status"] == "ok"
    print(f"\npeak RSS {peak / 2**20:.0f} MiB (start {base / 2**20:.0f} MiB; bound {bound / 2**20:.0f} MiB); "
          f"healthy at the end: {health['status'] == 'ok'} (worker restarts {health['worker_restarts']}); "
          f"good inputs answered 200: {sum(r['status'] == 200 for r in good)} of {len(good)}, 503+Retry-After: "
          f"{sum(r['status'] == 503 for r in good)}, other: {len(bad_good)}, 200 with a wrong answer: {len(wrong)}; "
          f"**{'pass' if ok else 'FAIL'}**")
    return ok


def count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def run(name: str, args: list[str], backend: str, model: str | None, n: int, clients: int) -> bool:
    expected = [{**r, "file": "photo.jpg"} for r in analyze([PHOTO_PATH], backend, model, max_new_tokens=160)]
    with subprocess_server(*args) as url:
        base = peak_rss_bytes(url.pid)[1]
        post(url, "photo")  # warm-up
        start = time.perf_counter()
        results = attack(url, n, clients)
        wall = time.perf_counter() - start
        time.sleep(1)
        ok = report(f"{name} ({n} requests + 20 hang-ups from {clients} clients, {wall:.0f} s)", url, results,
                    expected, base, Limits())
    return ok


def main(n: int, clients: int, model: str | None) -> int:
    ok = run("landmarks", ["--backend", "landmarks"], "landmarks", None, n, clients)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = model or str(tiny.build_tiny(os.path.join(tmp, "tiny")))
        ok &= run(f"vlm ({'tiny, untrained' if model is None else model})", ["--model", ckpt], "vlm", ckpt, n, clients)
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--model", help="a checkpoint for the vlm row (default: a fresh tiny model)")
    a = ap.parse_args()
    raise SystemExit(main(a.n, a.clients, a.model))
