"""Load test of `facial-r1 serve` on loopback: N requests from C concurrent clients, each a
multipart upload of grace_hopper.jpg (512x600, one face); latency percentiles and throughput.

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py [--n 64] [--concurrency 1 8 32] [--model CKPT]

Rows: the landmark backend at each concurrency, then the VLM backend (a fresh tiny model unless
--model; 64 new tokens) at the highest concurrency with the worker's batch cut at 1 and at 8,
which shows what batching queued requests buys. The server is a child process started as a
user starts it; client and server share this machine's cores.
"""

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import matplotlib.cbook

from facial_r1 import tiny
from facial_r1.serve import subprocess_server

PHOTO = open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb").read()
BOUNDARY = "facialr1bench"
BODY = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n").encode() + PHOTO + f"\r\n--{BOUNDARY}--\r\n".encode()


def post(url: str) -> float:
    """Seconds for one request; raises unless it came back 200 with one face."""
    start = time.perf_counter()
    request = urllib.request.Request(url + "/v1/analyze", BODY,
                                     {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    with urllib.request.urlopen(request, timeout=600) as reply:
        results = json.load(reply)["results"]
    assert len(results) == 1 and "box" in results[0], results
    return time.perf_counter() - start


def load(url: str, n: int, concurrency: int) -> dict:
    post(url)  # warm-up
    batches0 = json.load(urllib.request.urlopen(url + "/healthz"))["batches"]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(lambda _: post(url), range(n)))
    wall = time.perf_counter() - start
    batches = json.load(urllib.request.urlopen(url + "/healthz"))["batches"] - batches0
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": q[49], "p90": q[89], "p99": q[98], "max": latencies[-1], "rps": n / wall, "per_batch": n / batches}


def row(name: str, concurrency: int, r: dict) -> str:
    ms = " | ".join(f"{r[k] * 1000:8.0f}" for k in ("p50", "p90", "p99", "max"))
    return f"| {name:<26} | {concurrency:>3} | {ms} | {r['rps']:6.1f} | {r['per_batch']:5.1f} |"


def main(n: int, concurrency: list[int], model: str | None) -> None:
    print(f"{n} requests per row; latency in ms; images per batch = requests / worker batches")
    print("| server | clients | p50 | p90 | p99 | max | req/s | images/batch |")
    print("|---|---|---|---|---|---|---|---|")
    with subprocess_server("--backend", "landmarks") as url:
        for c in concurrency:
            print(row("landmarks", c, load(url, n, c)), flush=True)
    with tempfile.TemporaryDirectory() as d:
        model = model or str(tiny.build_tiny(f"{d}/tiny"))
        for max_batch in (1, 8):
            with subprocess_server("--model", model, "--max-batch", str(max_batch), "--max-new-tokens", "64") as url:
                print(row(f"vlm (tiny), max-batch {max_batch}", concurrency[-1], load(url, n, concurrency[-1])),
                      flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--model")
    a = p.parse_args()
    main(a.n, a.concurrency, a.model)
