"""GRPO step time and tokens/s per GPU, the way verl and EasyR1 report it: all prompt and
completion tokens of a step divided by (step time x GPUs).

    OMP_NUM_THREADS=1 python benchmarks/grpo_speed.py                       # tiny, CPU
    accelerate launch --num_processes 1 benchmarks/grpo_speed.py --geometry 3b --steps 10   # GPU

The 3B/7B models are randomly initialised at the published geometry (benchmarks/geometry.py).
Extra --key value pairs override configs/grpo/tiny-cpu.yaml (e.g. --num_generations 8).
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from geometry import build_geometry  # benchmarks/geometry.py

from facial_r1 import grpo, tiny
from facial_r1.config import parse_overrides
from facial_r1.data.synfacs import synth_faces


def main(geometry: str, steps: int, overrides: dict) -> None:
    gpu = torch.cuda.is_available()
    gpus = max(1, torch.cuda.device_count()) if gpu else 1
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        data = d / "synfacs"
        synth_faces(data, 256, seed=0, test_fraction=0.0, reasoning_fraction=0.0)
        model = tiny.build_tiny(d / "tiny") if geometry == "tiny" else build_geometry(geometry, d)
        out = grpo.main("configs/grpo/tiny-cpu.yaml", {
            "model": str(model), "data_paths": [str(data / "train.jsonl")], "image_folders": [str(data)],
            "output_dir": str(d / "grpo"), "max_steps": steps, "logging_steps": 1, "save_strategy": "no",
            "use_cpu": not gpu, "bf16": gpu,
            "dtype": "bfloat16" if gpu else "float32", "prompt": "question", **overrides})
        logs = [x for x in json.loads((out / "trainer_state.json").read_text())["log_history"] if "step_time" in x]
    logs = logs[1:] if len(logs) > 2 else logs  # the first step carries warm-up costs
    tokens = [b["num_tokens"] - a["num_tokens"] for a, b in zip(logs, logs[1:])]
    step = statistics.fmean(x["step_time"] for x in logs[1:])
    device = torch.cuda.get_device_name() if gpu else "CPU, 1 thread"
    print(f"{geometry} on {device} x{gpus}: {step:.2f} s/step, {statistics.fmean(tokens):.0f} tokens/step, "
          f"{statistics.fmean(tokens) / (step * gpus):.0f} tokens/s per device "
          f"(generation {100 * statistics.fmean(x['time/generate'] for x in logs[1:]) / step:.0f} % of the step)")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--geometry", default="tiny", choices=["tiny", "3b", "7b"])
    p.add_argument("--steps", type=int, default=8)
    a, extra = p.parse_known_args()
    main(a.geometry, a.steps, parse_overrides(extra))
