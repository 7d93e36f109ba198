"""The method's ablation on the embedded default: the pipeline per seed, plus alternatives.

    python benchmarks/method_ablation.py --seeds 0 1 2 [--variants main warmup_selfsup ...] [--jobs 2]

Each (variant, seed) is one `facial-r1 pipeline` run of configs/pipeline/tiny-cpu.yaml with
the SynFACS seed and the training seed both set to the seed, in its own process (one torch
thread; `--jobs` runs side by side, one per core). Budgets are steps, so a rerun gives the
same numbers. Prints, per variant, stage by metric as mean ± sd over seeds, then each paired
difference per seed with its 95 % CI, and how many seeds have the CI's lower bound above 0.
This is the CPU test bed: change a reward or a QC rule, add a variant, rerun, compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONFIG = "configs/pipeline/tiny-cpu.yaml"
# name -> pipeline overrides (on top of the seed); the alternatives skip the synthesis rounds,
# which do not depend on what they change, to fit the CPU budget.
VARIANTS = {
    "main": {},
    "warmup_selfsup": {"sft": {"max_steps": 500, "miniature": {"vision_warmup_steps": 800,
                                                            "vision_warmup_objective": "selfsup"},
                               "save_strategy": "no"}, "rounds": 0},
    "warmup_none": {"sft": {"max_steps": 500, "miniature": {"vision_warmup_steps": 0}, "save_strategy": "no"}, "rounds": 0},
    "grpo_unguided": {"grpo": {"max_steps": 80, "save_strategy": "no", "miniature": {"guided_fraction": 0.0}},
                      "rounds": 0},
    "reward_au_f1_signed": {"grpo": {"max_steps": 80, "save_strategy": "no",
                                     "rewards": ["au_f1_signed", "accuracy", "format"]}, "rounds": 0},
    # per-reward token credit: AU F1's advantage share on <think>, accuracy's on <answer> (grpo.py)
    "token_credit": {"grpo": {"max_steps": 80, "save_strategy": "no", "token_credit": True}, "rounds": 0},
    # the main job before the instruction warm-start and the sampled first attempt (with one round:
    # what it changes is synthesis)
    "instruct_none": {"sft": {"max_steps": 500, "miniature": {"vision_warmup_steps": 800, "instruct_warmup_steps": 0},
                              "save_strategy": "no"}, "synthesis": {"attempts": 3, "batch_size": 32,
                              "max_new_tokens": 128, "temperature": 0.8, "sample_first": False,
                              "qc": {"au_f1_min": 1.0, "dedup_threshold": 0.9}}, "rounds": 1},
    # 2.5x the GRPO steps (the control row gets as many more SFT steps)
    "grpo_200_steps": {"grpo": {"max_steps": 200, "save_strategy": "no"}, "rounds": 0},
    # half the instruction warm-start (~65 s less), and that time spent on GRPO (+40 steps)
    "instruct_500": {"sft": {"max_steps": 500, "miniature": {"vision_warmup_steps": 800, "instruct_warmup_steps": 500},
                             "save_strategy": "no"}},
    "instruct_750_grpo_120": {"sft": {"max_steps": 500, "miniature": {"vision_warmup_steps": 800,
                                                                   "instruct_warmup_steps": 750},
                                      "save_strategy": "no"}, "grpo": {"max_steps": 120, "save_strategy": "no"}},
    "instruct_500_grpo_120": {"sft": {"max_steps": 500, "miniature": {"vision_warmup_steps": 800,
                                                                   "instruct_warmup_steps": 500},
                                      "save_strategy": "no"}, "grpo": {"max_steps": 120, "save_strategy": "no"}},
}
KEYS = ("au_f1", "accuracy", "rouge_l", "format_rate")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", default=["0", "1", "2"], help="integer seeds (SynFACS and training)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--jobs", type=int, default=2, help="pipelines side by side (one core each)")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    runs = [(v, s) for v in args.variants for s in seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(runs, pool.map(lambda r: run(*r, Path(args.out)), runs)))
    text = "\n".join(summary(v, {s: results[(v, s)] for s in seeds}) for v in args.variants)
    print(text)
    Path(args.out, "ablation.md").write_text(text)
    return 0


def parse_seeds(values: list[str]) -> list[int]:
    """Seeds are integers; anything else is an error that names it."""
    seeds = []
    for v in values:
        try:
            seeds.append(int(v))
        except ValueError:
            raise SystemExit(f"method_ablation: --seeds takes integers, got {v!r}") from None
    return seeds


def run(variant: str, seed: int, out: Path) -> dict:
    run_dir = out / f"{variant}-seed{seed}"
    overrides = {**VARIANTS[variant], "run_dir": str(run_dir), "seed": seed}
    synfacs = {**_read_config()["synfacs"], "seed": seed}
    cmd = [sys.executable, "-m", "facial_r1.cli", "pipeline", "--config", CONFIG, "--synfacs", json.dumps(synfacs)]
    for k, v in overrides.items():
        cmd += [f"--{k}", json.dumps(v)]
    if _finished_with(run_dir, {**overrides, "synfacs": synfacs}):
        return json.loads((run_dir / "metrics.json").read_text())  # resumable: a finished run of this config
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads((run_dir / "metrics.json").read_text())


def _finished_with(run_dir: Path, overrides: dict) -> bool:
    """A run is reused only if it finished and its inputs' fingerprint (saved by the pipeline:
    the resolved config, the stage configs, facial-r1's source) is the one of now; anything
    else runs again."""
    saved = run_dir / "inputs.fingerprint"
    if not (run_dir / "metrics.json").is_file() or not saved.is_file():
        return False
    from facial_r1.pipeline import fingerprint, read_pipeline

    wanted = read_pipeline(CONFIG, dict(overrides))
    return saved.read_text() == fingerprint(wanted)


def _read_config() -> dict:
    import yaml

    return yaml.safe_load(Path(CONFIG).read_text())


def summary(variant: str, by_seed: dict[int, dict]) -> str:
    """Stage by metric, mean ± sd over seeds (points); then the paired differences per seed."""
    first = next(iter(by_seed.values()))
    lines = [f"### {variant} (seeds {', '.join(map(str, by_seed))})", "",
             "| stage | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]
    for i, row in enumerate(first["rows"]):
        if "au_f1" not in row:
            continue
        cells = []
        for k in KEYS:
            vals = [100 * m["rows"][i][k][0] for m in by_seed.values() if len(m["rows"]) > i and k in m["rows"][i]]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}")
        lines.append(f"| {_short(row['stage'])} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference | Δ AU F1 per seed [95 % CI] | Δ accuracy per seed [95 % CI] | "
              "seeds with AU F1 / acc CI > 0 |", "|---|---|---|---|"]
    for j, d in enumerate(first["diffs"]):
        per = [m["diffs"][j] for m in by_seed.values() if len(m["diffs"]) > j]
        cell = {k: "; ".join(f"{100 * x[k][0]:+.1f} [{100 * x[k][1]:+.1f}, {100 * x[k][2]:+.1f}]" for x in per)
                for k in ("au_f1", "accuracy")}
        wins = "/".join(str(sum(x[k][1] > 0 for x in per)) for k in ("au_f1", "accuracy"))
        lines.append(f"| {_short(d['stage'])} vs {_short(d['vs'])} | {cell['au_f1']} | {cell['accuracy']} | "
                     f"{wins} of {len(per)} |")
    return "\n".join(lines) + "\n"


def _short(stage: str) -> str:
    return stage.split(" (")[0]


if __name__ == "__main__":
    raise SystemExit(main())
