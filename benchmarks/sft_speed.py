"""SFT throughput and peak memory: the tiny default on CPU, and (on a GPU) randomly
initialised models of Qwen2.5-VL-3B / -7B geometry, full fine-tuning and LoRA.

    OMP_NUM_THREADS=1 python benchmarks/sft_speed.py                    # tiny, CPU
    python benchmarks/sft_speed.py --geometry 3b 7b --lora both --steps 10   # GPU: real geometries

Weights can't be downloaded here, so the big models are built from their published
config sizes with random weights: the speed and memory of a step do not depend on the values.
"""

import argparse
import json
import resource
import tempfile
from pathlib import Path

import torch
from geometry import GEOMETRY, build_geometry  # benchmarks/geometry.py

from facial_r1 import sft, tiny
from facial_r1.data.synfacs import synth_faces

def run(model: str, data: Path, out: Path, steps: int, lora: bool, gpu: bool, batch: int) -> dict:
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = sft.main("configs/sft/tiny-cpu.yaml", {
        "model": model, "data_paths": [str(data / "train.jsonl")], "image_folders": [str(data)],
        "output_dir": str(out), "max_steps": steps, "miniature": None,
        "save_strategy": "no", "logging_steps": steps, "per_device_train_batch_size": batch,
        "use_cpu": not gpu, "bf16": gpu, "dtype": "bfloat16" if gpu else "float32",
        "lora": {"r": 16} if lora else None, "learning_rate": 1e-5 if gpu else 1e-3, "warmup_steps": 0,
        "activation_checkpointing": gpu})
    logs = json.loads((result / "trainer_state.json").read_text())["log_history"]
    summary = next(x for x in logs if "train_samples_per_second" in x)
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else \
        max(rss0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 2**20
    return {"samples_per_s": summary["train_samples_per_second"], "peak_gib": peak,
            "memory": "GPU max allocated" if gpu else "process peak RSS"}


def main(geometry: list[str], lora: str, steps: int, batch: int) -> None:
    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if gpu else "CPU, 1 thread"
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        data = d / "synfacs"
        synth_faces(data, 64 + 8, seed=0, test_fraction=8 / 72, reasoning_fraction=1.0)
        targets = [("tiny", str(tiny.build_tiny(d / "tiny")))] if not geometry else \
            [(g, str(build_geometry(g, d))) for g in geometry]
        modes = {"full": [False], "lora": [True], "both": [False, True]}[lora]
        print(f"device: {device}; batch {batch}, {steps} steps, 112 px faces (16 visual tokens)")
        for name, path in targets:
            for use_lora in modes:
                r = run(path, data, d / f"out-{name}-{use_lora}", steps, use_lora, gpu, batch)
                print(f"{name:5s} {'LoRA r16' if use_lora else 'full FT':8s} {r['samples_per_s']:8.1f} samples/s   "
                      f"peak {r['peak_gib']:.2f} GiB ({r['memory']})")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--geometry", nargs="*", default=[], choices=sorted(GEOMETRY))
    p.add_argument("--lora", default="full", choices=["full", "lora", "both"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args()
    main(a.geometry, a.lora, a.steps, a.batch)
