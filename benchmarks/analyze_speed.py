"""`analyze` throughput on CPU: faces/s for the landmark backend, and for the VLM backend one
face at a time versus batched; plus eval throughput (greedy generation + scoring).

    OMP_NUM_THREADS=1 python benchmarks/analyze_speed.py [--n 32] [--model CKPT]

Inputs are copies of matplotlib's grace_hopper.jpg (one face each). Without --model the VLM
rows use a freshly built tiny model (speed does not depend on its weights).
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.cbook

from facial_r1 import checkpoints, evaluate, tiny
from facial_r1.analyze import analyze
from facial_r1.data.schema import read_samples_with_images
from facial_r1.data.synfacs import synth_faces


def faces_per_s(paths, **kwargs) -> float:
    start = time.perf_counter()
    n = sum("box" in r for r in analyze(paths, **kwargs))
    return n / (time.perf_counter() - start)


def main(n: int, model: str | None) -> None:
    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        paths = []
        for i in range(n):
            shutil.copy(photo, d / f"{i:03d}.jpg")
            paths.append(str(d / f"{i:03d}.jpg"))
        model = model or str(tiny.build_tiny(d / "tiny"))
        print(f"{n} photos (512x600, one face each), CPU, one thread")
        print(f"landmarks backend        {faces_per_s(paths):7.1f} faces/s")
        for batch in (1, 8):
            rate = faces_per_s(paths, backend="vlm", model=model, batch_size=batch, max_new_tokens=128)
            print(f"vlm backend, batch {batch:<2d}   {rate:7.1f} faces/s")
        synth_faces(d / "synfacs", 200, seed=0, test_fraction=1.0)
        test, _ = read_samples_with_images(d / "synfacs" / "test.jsonl", [d / "synfacs"])
        net, processor = checkpoints.load(model)
        start = time.perf_counter()
        evaluate.score(test, evaluate.predict(net, processor, test, "question", 25, 128), "synfacs")
        print(f"eval (generate + score)  {len(test) / (time.perf_counter() - start):7.1f} samples/s")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--model")
    a = p.parse_args()
    main(a.n, a.model)
