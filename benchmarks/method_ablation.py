"""The method's ablation on the embedded default: the pipeline per seed, plus alternatives.

    python benchmarks/method_ablation.py --seeds 0 1 2 [--variants main warmup_selfsup ...] [--jobs 2]

Each (variant, seed) is one `facial-r1 pipeline` run of configs/pipeline/tiny-cpu.yaml with
the SynFACS seed and the training seed both set to the seed, in its own process (one torch
thread; `--jobs` runs side by side, one per core). Budgets are steps, so a rerun gives the
same numbers. Every run shares a stage cache (`OUT/cache`, launch.py): a stage whose inputs,
config and source equal one that ran (the SFT of a seed, across variants that change only
GRPO) is copied, not run again; the first variant runs first for every seed, to fill it.
Prints, per variant, stage by metric as mean ± sd over seeds, the sampled metrics likewise,
then each paired difference per seed with its 95 % CI, and how many seeds have the CI's lower
bound above 0. This is the CPU test bed: change a reward or a QC rule, add a variant, rerun,
compare. The `shuffled_reward` variant is its own check: GRPO on right labels must beat GRPO
on face-shuffled labels, or the bed cannot tell a right reward from a wrong one.
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


def _4x8(**grpo) -> dict:
    """GRPO overrides on the 4 prompts x 8 generations, half guided, of before 2e335b6."""
    return {"num_generations": 8, "miniature": {"guided_fraction": 0.5}, **grpo}


# name -> pipeline overrides (on top of the seed); the alternatives skip the synthesis rounds,
# which do not depend on what they change, to fit the CPU budget.
# The variants above issue 27's section ran on the config of their day (docs/pipeline.md dates
# each table); they now run on today's shipped GRPO and SFT, so their rows are history.
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
    # --- GRPO's gain (issue 27): each changes GRPO only, so SFT and its eval come from the cache ---
    # measured before the shipped config went to 8 prompts x 4 (2e335b6): they keep 4 prompts x 8
    # generations, half guided, so each reproduces its row of docs/pipeline.md
    "grpo_only": {"rounds": 0, "grpo": _4x8()},  # the main job's GRPO of then, no rounds: the reference below
    # the test bed's negative control: the same GRPO, its rewards on face-shuffled labels
    "shuffled_reward": {"rounds": 0, "shuffled_control": True, "grpo": _4x8()},
    # the GRPO cap of before (96 tokens, truncated completions punished, not masked)
    "truncated_96": {"rounds": 0, "grpo": _4x8(max_completion_length=96, mask_truncated_completions=False),
                     "eval_max_new_tokens": 96},
    # more analysis faces per step: 8 prompts x 4 generations, a quarter guided (adopted since)
    "prompts_8x4": {"rounds": 0, "grpo": {"num_generations": 4, "miniature": {"guided_fraction": 0.25}}},
    "lr_3e-4": {"rounds": 0, "grpo": _4x8(learning_rate=3.0e-4)},
    "steps_160": {"rounds": 0, "grpo": _4x8(max_steps=160)},
    "au_weight_2": {"rounds": 0, "grpo": _4x8(reward_weights=[2.0, 1.0, 1.0])},
    "normalize_then_sum": {"rounds": 0, "grpo": _4x8(multi_objective_aggregation="normalize_then_sum")},
    "au_inverse_freq": {"rounds": 0, "grpo": _4x8(rewards=["au_f1_inverse_freq", "accuracy", "format"])},
    # prompts_8x4 with its shuffled-label control, and the whole method (both rounds) with it
    "prompts_8x4_shuffled": {"rounds": 0, "shuffled_control": True,
                             "grpo": {"num_generations": 4, "miniature": {"guided_fraction": 0.25}}},
    # au_inverse_freq with its shuffled-label control, and the whole method (both rounds) with it
    "au_inverse_freq_shuffled": {"rounds": 0, "shuffled_control": True,
                                 "grpo": _4x8(rewards=["au_f1_inverse_freq", "accuracy", "format"])},
    "main_au_inverse_freq": {"grpo": _4x8(rewards=["au_f1_inverse_freq", "accuracy", "format"]),
                             "round_grpo": _4x8(rewards=["au_f1_inverse_freq", "accuracy", "format"])},
    "main_8x4": {"grpo": {"num_generations": 4, "miniature": {"guided_fraction": 0.25}},
                 "round_grpo": {"num_generations": 4, "miniature": {"guided_fraction": 0.25}}},
    # the adopted 8 x 4 config with twice the GRPO steps (the control row gets as many more SFT
    # steps), with its shuffled-label control in the same run
    "steps_160_8x4": {"rounds": 0, "shuffled_control": True,
                      "grpo": {"max_steps": 160, "num_generations": 4, "miniature": {"guided_fraction": 0.25}}},
    # the adopted 8 x 4 config with each reward normalized over the group before the sum (TRL's
    # multi_objective_aggregation), with its shuffled-label control
    "normalize_then_sum_8x4": {"rounds": 0, "shuffled_control": True,
                               "grpo": {"multi_objective_aggregation": "normalize_then_sum", "num_generations": 4,
                                        "miniature": {"guided_fraction": 0.25}}},
    # the whole method (both rounds) with normalize_then_sum in every GRPO stage
    "main_nts_8x4": {"grpo": {"multi_objective_aggregation": "normalize_then_sum", "num_generations": 4,
                              "miniature": {"guided_fraction": 0.25}},
                     "round_grpo": {"multi_objective_aggregation": "normalize_then_sum", "num_generations": 4,
                                    "miniature": {"guided_fraction": 0.25}}},
    # the adopted 8 x 4 config with the vision tower frozen during GRPO (the language model alone
    # learns from the reward), with its shuffled-label control
    "freeze_vision_8x4": {"rounds": 0, "shuffled_control": True,
                          "grpo": {"freeze_vision": True, "num_generations": 4, "miniature": {"guided_fraction": 0.25}}},
    # the whole method (both rounds) with the vision tower frozen in every GRPO stage
    "main_fv_8x4": {"grpo": {"freeze_vision": True, "num_generations": 4, "miniature": {"guided_fraction": 0.25}},
                    "round_grpo": {"freeze_vision": True, "num_generations": 4, "miniature": {"guided_fraction": 0.25}}},
    # normalize_then_sum on 8 x 4 with half the learning rate (it lowered AU F1 in seed 2 at the full one)
    "nts_lr_5e-5_8x4": {"rounds": 0, "shuffled_control": True,
                        "grpo": {"multi_objective_aggregation": "normalize_then_sum", "learning_rate": 5.0e-5,
                                 "num_generations": 4, "miniature": {"guided_fraction": 0.25}}},
    # the shipped GRPO (and its shuffled-label control) again from the same SFT model with another
    # training seed: how far GRPO's own sampling moves the rows the per-seed CIs do not cover
    "prompts_8x4_grpo_seed_100": {"rounds": 0, "shuffled_control": True, "grpo": {"seed": 100}},
    # the whole method (both rounds) with nts_lr_5e-5_8x4's GRPO in every GRPO stage
    "main_nts_lr_5e-5_8x4": {"grpo": {"multi_objective_aggregation": "normalize_then_sum", "learning_rate": 5.0e-5,
                                      "num_generations": 4, "miniature": {"guided_fraction": 0.25}},
                             "round_grpo": {"multi_objective_aggregation": "normalize_then_sum", "learning_rate": 5.0e-5,
                                            "num_generations": 4, "miniature": {"guided_fraction": 0.25}}},
    # the adopted 8 x 4 config with AU F1's reward counted twice, with its shuffled-label control
    "au_weight_2_8x4": {"rounds": 0, "shuffled_control": True,
                        "grpo": {"reward_weights": [2.0, 1.0, 1.0], "num_generations": 4,
                                 "miniature": {"guided_fraction": 0.25}}},
}
KEYS = ("au_f1", "accuracy", "emotion_f1", "cited_per_gold", "rouge_l", "format_rate")
SAMPLE_FACES = 200  # the sampled metrics (mean@8, maj@8, pass@8) on this many held-out faces, every run
SAMPLED_KEYS = ("mean_acc", "maj_acc", "pass_acc", "pass_acc_shuffled", "mean_au_f1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", default=["0", "1", "2"], help="integer seeds (SynFACS and training)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--jobs", type=int, default=2, help="pipelines side by side (one core each)")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    results = {}
    for batch in (args.variants[:1], args.variants[1:]):  # the first fills the stage cache for the rest
        runs = [(v, s) for v in batch for s in seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            results.update(zip(runs, pool.map(lambda r: run(*r, Path(args.out)), runs)))
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
    # evaluations in the pipeline's process: --jobs puts the second core to use across runs
    overrides = {"sample_faces": SAMPLE_FACES, "eval_alongside": False, **VARIANTS[variant], "run_dir": str(run_dir),
                 "seed": seed, "stage_cache": str(out / "cache")}
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
    """Stage by metric, mean ± sd over seeds (points; AUs cited per true AU as a ratio); the
    sampled metrics likewise; then the paired differences per seed."""
    first = next(iter(by_seed.values()))
    lines = [f"### {variant} (seeds {', '.join(map(str, by_seed))})", "",
             "| stage | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]
    for i, row in enumerate(first["rows"]):
        if "au_f1" in row:
            cells = [_mean_sd([m["rows"][i].get(k) for m in by_seed.values() if len(m["rows"]) > i], k) for k in KEYS]
            lines.append(f"| {_short(row['stage'])} | " + " | ".join(cells) + " |")
    sampled = [(i, row) for i, row in enumerate(first["rows"]) if "sampled" in row]
    if sampled:
        k = sampled[0][1]["sampled"]["k"]
        lines += ["", f"| stage (sampled, {k} per face on {sampled[0][1]['sampled']['faces']} faces) | "
                  + " | ".join(SAMPLED_KEYS) + " |", "|---|" + "---|" * len(SAMPLED_KEYS)]
        for i, row in sampled:
            cells = [_mean_sd([m["rows"][i]["sampled"].get(key) for m in by_seed.values() if len(m["rows"]) > i], key)
                     for key in SAMPLED_KEYS]
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


def _mean_sd(cells: list, key: str) -> str:
    """mean ± sd over seeds of [value, low, high] cells (points, or a ratio for AUs cited per true)."""
    scale, digits = (1, 2) if key == "cited_per_gold" else (100, 1)
    vals = [scale * c[0] for c in cells if c]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.{digits}f} ± {sd:.{digits}f}"


def _short(stage: str) -> str:
    return stage.split(" (")[0]


if __name__ == "__main__":
    raise SystemExit(main())
