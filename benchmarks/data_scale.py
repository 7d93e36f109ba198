"""Building the 7B GRPO mixture (configs/grpo/qwen2.5-vl-7b.yaml: all of FEA, random:5000 of a
130k-row DISFA file, random:5000 of RAF-DB) before and after sampling came before decoding.

    python benchmarks/data_scale.py [--rows 130000] [--out /tmp/data-scale]

before: every row of every file read, every image decoded, then the rules sample (what each of
8 processes did in every stage). after: every row read and validated, the rules sample, the
sampled rows' images checked by their header (decoded later, by the batch that needs them).
Each runs in a fresh process; its wall time and peak RSS are printed. Frames are 224 px JPEGs,
1,000 distinct files that the rows cycle through (the decode cost per row is a real decode).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

RULES = {"fea": ("all", 20_000), "disfa": ("random:5000", None), "rafdb": ("random:5000", 12_000)}


def make_data(out: Path, disfa_rows: int) -> list[tuple[str, str, str]]:
    from PIL import Image

    images = out / "images"
    if not images.is_dir():
        images.mkdir(parents=True)
        rng = random.Random(0)
        for i in range(1000):
            Image.effect_noise((224, 224), 40 + rng.random() * 40).convert("RGB").save(images / f"f{i}.jpg", quality=90)
    files = []
    for name, (rule, rows) in RULES.items():
        n = rows or disfa_rows
        path = out / f"{name}.jsonl"
        if not path.is_file() or sum(1 for _ in open(path)) != n:
            with open(path, "w") as f:
                for i in range(n):
                    f.write(json.dumps({"id": f"{name}{i}", "dataset": name, "image": f"images/f{i % 1000}.jpg",
                                        "AUs": ["AU4", "AU7"], "labels": ["Anger"]}) + "\n")
        files.append((str(path), str(out), rule))
    return files


def build(mode: str, files: list) -> None:
    """Runs in the child process: one way of building the mixture."""
    from facial_r1.data.mixture import load_mixture, sample_rule
    from facial_r1.data.schema import read_samples_with_images

    start = time.perf_counter()
    if mode == "before":
        samples = []
        for path, folder, rule in files:
            good, _ = read_samples_with_images(path, [folder], skip_bad=True, decode=True)
            samples += sample_rule(rule, good, 42, path)
    else:
        samples, _ = load_mixture([f[0] for f in files], [f[1] for f in files], [f[2] for f in files], seed=42)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"mode": mode, "samples": len(samples), "seconds": seconds, "peak_rss_mib": peak}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=130_000, help="rows of the DISFA file")
    ap.add_argument("--out", default="/tmp/facial-r1-data-scale")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        build(args.child[0], json.loads(args.child[1]))
        return
    files = make_data(Path(args.out), args.rows)
    results = {}
    for mode in ("before", "after"):
        done = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps(files)], capture_output=True,
                              text=True, check=True)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    b, a = results["before"], results["after"]
    print(f"| | samples | wall time (s) | peak RSS (MiB) |\n|---|---|---|---|")
    for r in (b, a):
        print(f"| {r['mode']} | {r['samples']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} |")
    print(f"after/before: time x{a['seconds'] / b['seconds']:.3f}, peak RSS x{a['peak_rss_mib'] / b['peak_rss_mib']:.2f} "
          f"({args.rows} DISFA rows; per process, in each of a run's processes and stages)")


if __name__ == "__main__":
    main()
