"""SynFACS rendering speed on one core: faces/s for rendering alone and with PNG writing.

    OMP_NUM_THREADS=1 python benchmarks/synfacs_speed.py [--n 1000] [--size 112]
"""

import argparse
import tempfile
import time
from pathlib import Path

from facial_r1.data.synfacs import make_sample


def main(n: int = 1000, size: int = 112) -> None:
    t = time.perf_counter()
    images = [make_sample(i, 0, size)[1] for i in range(n)]
    render = n / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        for i, im in enumerate(images):
            im.save(Path(d) / f"{i}.png", compress_level=1)
        write = n / (time.perf_counter() - t)
    total = 1 / (1 / render + 1 / write)
    print(f"{size}px: render {render:.0f} faces/s, PNG write {write:.0f}/s, both {total:.0f} faces/s (n={n})")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--size", type=int, default=112)
    main(**vars(p.parse_args()))
