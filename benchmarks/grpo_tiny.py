"""Tiny GRPO on SynFACS: where a step's time goes, and whether GRPO beats its SFT start.

    OMP_NUM_THREADS=1 python benchmarks/grpo_tiny.py --sft runs/tiny-cpu/sft --data runs/tiny-cpu/synfacs \
        [--steps 100] [--key value ...]      # extra pairs override configs/grpo/tiny-cpu.yaml

Reports (1) the step time split into generation, prompt preparation (collation), reward +
parsing, and the rest (log-prob + update), from the trainer's own per-step timers; (2) the
held-out greedy mean reward, AU F1 and accuracy of the SFT checkpoint and of the GRPO result.
"""

import argparse
import json
import statistics
from pathlib import Path

from facial_r1 import checkpoints, evaluate, grpo
from facial_r1.config import parse_overrides
from facial_r1.data.schema import read_samples_with_images
from facial_r1.rewards import REWARDS


def held_out(model: str, data: Path) -> dict:
    test, _ = read_samples_with_images(data / "test.jsonl", [data])
    net, processor = checkpoints.load(model)
    completions = evaluate.predict(net, processor, test, checkpoints.read_prompt_settings(model)["prompt"],
                                   batch_size=25, max_new_tokens=128)
    m = evaluate.score(test, completions, "synfacs")
    cols = {"AUs": [s["AUs"] for s in test], "labels": [s["labels"] for s in test]}
    reward = sum(statistics.fmean(REWARDS[n](completions, **cols)) for n in ("au_f1", "accuracy", "format"))
    return {"reward": reward, "au_f1": m["au_f1"], "accuracy": m["accuracy"], "format": m["format_rate"]}


def main(sft: str, data: str, steps: int, out: str, overrides: dict) -> None:
    data = Path(data)
    before = held_out(sft, data)
    pool = data / "pool.jsonl" if (data / "pool.jsonl").is_file() else data / "train.jsonl"
    result = grpo.main("configs/grpo/tiny-cpu.yaml", {"model": sft, "data_paths": [str(pool)],
                                                       "image_folders": [str(data)], "output_dir": out,
                                                       "max_steps": steps, "save_strategy": "no",
                                                       "logging_steps": 1, **overrides})
    logs = [x for x in json.loads((result / "trainer_state.json").read_text())["log_history"] if "step_time" in x]
    after = held_out(str(result), data)
    rewards = sorted({k for x in logs for k in x if k.startswith("time/reward/")})
    mean = {k: statistics.fmean(x[k] for x in logs) for k in ("step_time", "time/generate", *rewards)}
    reward = sum(mean[k] for k in rewards)
    rest = mean["step_time"] - mean["time/generate"] - reward  # prompt collation, log-probs, update
    print(f"{len(logs)} GRPO steps, {mean['step_time']:.2f} s/step:")
    for name, t in (("generation (model.generate)", mean["time/generate"]), ("reward + parsing", reward),
                    ("collation + log-probs + update", rest)):
        print(f"  {name:32s} {t:6.3f} s  {100 * t / mean['step_time']:5.1f} %")
    print(f"  reward + parsing: {100 * reward / mean['step_time']:.1f} % of the step (bar: < 5 %)")
    zero = statistics.fmean(x["frac_reward_zero_std"] for x in logs)
    print(f"  groups with zero reward spread: {100 * zero:.0f} %")
    print("held-out (greedy) | mean reward | AU F1 | accuracy | format")
    for name, m in (("SFT start", before), (f"GRPO {len(logs)} steps", after)):
        print(f"{name:17s} | {m['reward']:.3f} | {m['au_f1']:.3f} | {m['accuracy']:.3f} | {m['format']:.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--sft", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", default="runs/bench-grpo")
    args, extra = p.parse_known_args()
    main(args.sft, args.data, args.steps, args.out, parse_overrides(extra))
