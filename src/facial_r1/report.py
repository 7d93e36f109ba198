"""The pipeline's report: every stage's held-out metrics with bootstrap CIs, the paired
differences between stages, what each stage trained on, wall times, as `report.md`,
`metrics.json` and `metrics.png` in the run folder.

Report rows are identified by their `Row` (a role and a round), never by their display text:
which rows are paired follows from the roles (the controls against SFT; GRPO against SFT, the
same-steps control and the shuffled-reward control; each round against the row before it).
"""

from __future__ import annotations

import enum
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from facial_r1 import stats
from facial_r1.config import StageConfig
from facial_r1.scoring import METRICS, RATIOS, ScoreTable

log = logging.getLogger(__name__)


class Role(enum.Enum):
    SFT = "sft"
    CONTROL = "control"  # SFT continued as many steps as GRPO took
    GRPO = "grpo"
    SHUFFLED = "shuffled"  # GRPO with the same steps, its rewards on face-shuffled labels
    ROUND = "round"  # a round of synthesis + retraining


@dataclass(frozen=True)
class Row:
    role: Role
    label: str  # the display text
    round: int = 0


def summarize(rows: list[tuple[Row, ScoreTable | None]], n_boot: int, seed: int,
              sampled: dict | None = None) -> dict:
    """Rows (each metric with its bootstrap CI) and the paired differences: each stage against
    the row before it (the controls against SFT; GRPO against SFT and against each control).
    A row without a table (a round that kept nothing) is listed without numbers. `sampled`
    (Row -> scoring.SampledTable) adds each row's sampled metrics, CIs and paired differences."""
    sampled = sampled or {}
    scored = [(r, t) for r, t in rows if t is not None]
    out = []
    for r, t in scored:
        row = {"stage": r.label, "role": r.role.value, "round": r.round, **stats.bootstrap(t, n_boot, seed)}
        if r in sampled:
            row["sampled"] = {"k": sampled[r].k, "faces": len(sampled[r].ids),
                              **stats.bootstrap_means(sampled[r].values, n_boot, seed)}
        out.append(row)
    out += [{"stage": r.label, "role": r.role.value, "round": r.round} for r, t in rows if t is None]
    by_role = {r.role: (r, t) for r, t in scored if r.role is not Role.ROUND}
    pairs, previous = [], None
    for row, table in scored:
        if row.role in (Role.CONTROL, Role.SHUFFLED):
            pairs.append(((row, table), by_role[Role.SFT]))
            continue
        if previous is not None:
            pairs.append(((row, table), previous))
        for control in (Role.CONTROL, Role.SHUFFLED):
            if row.role is Role.GRPO and control in by_role:
                pairs.append(((row, table), by_role[control]))
        previous = (row, table)
    diffs = []
    for (b, tb), (a, ta) in pairs:
        diff = {"stage": b.label, "vs": a.label, **stats.paired_difference(tb, ta, n_boot, seed)}
        if b in sampled and a in sampled:
            diff["sampled"] = stats.paired_means(sampled[b].values, sampled[a].values, n_boot, seed)
        diffs.append(diff)
    return {"rows": out, "diffs": diffs, "n_faces": len(scored[0][1].ids) if scored else 0, "bootstrap": n_boot}


def trained_on(name: str, stage: StageConfig, result: dict, n_seed: int, n_pool: int,
                synthesized: list) -> list[tuple[str, str, str]]:
    """The 'what each stage trained on' rows of one training stage, from its resolved config
    and its result (the processes it ran on)."""
    values, processes = stage.values, result.get("num_processes", 1)
    if name in ("sft", "control"):
        out = _warmup_seen(values.get("miniature") or {}, values, n_seed) if name == "sft" else []
        if name == "sft":
            out.append(("SFT", f"{n_seed} seed faces", "reasoning (which cites the AUs and names the emotion)"))
        else:
            out.append(("control: SFT continued", f"the same {n_seed} seed faces, {values['max_steps']} more steps",
                        "reasoning"))
        return out
    if name.endswith("sft"):
        k = name.split()[0].removeprefix("round")
        return [(f"round {k} SFT", f"{n_seed} seed + {len(synthesized)} synthesized", "reasoning")]
    if name == "shuffled":
        return [("control: GRPO on shuffled labels", _grpo_faces(stage, n_pool, processes),
                 "another face's AUs + emotion (a derangement of the pool), through the rewards")]
    label = "GRPO" if name == "grpo" else f"round {name.split()[0].removeprefix('round')} GRPO"
    return [(label, _grpo_faces(stage, n_pool, processes), "AUs + emotion, only through the rewards")]


def _grpo_faces(stage: StageConfig, n_pool: int, processes: int) -> str:
    """How many pool prompts GRPO's step budget draws: steps x completions per step over all
    processes / generations per prompt."""
    steps = stage.get("max_steps")
    if steps is None or steps < 0:
        return f"{n_pool} pool faces, {stage.get('num_train_epochs')} epoch(s)"
    completions = steps * stage.get("per_device_train_batch_size") * stage.get("gradient_accumulation_steps") \
        * processes
    prompts = completions // stage.get("num_generations")
    guided = (stage.values.get("miniature") or {}).get("guided_fraction", 0)
    share = f", {guided:.0%} with the guided prompt" if guided else ""
    on = f" on {processes} processes" if processes > 1 else ""
    return f"{prompts} prompts drawn from {n_pool} pool faces ({steps} steps{on}{share})"


def _warmup_seen(mini: dict, values: dict, n_seed: int) -> list[tuple[str, str, str]]:
    from facial_r1.miniature import instruct_row_count

    seen = []
    steps = mini.get("vision_warmup_steps", 0)
    extra, objective = mini.get("vision_warmup_faces", 0), mini.get("vision_warmup_objective", "labels")
    if steps and objective == "labels":
        seen.append(("vision warm-start", f"{extra} rendered + {n_seed} seed faces, {steps} steps", "AUs + emotion"))
    elif steps:
        seen.append(("vision warm-start", f"{extra} rendered faces, {steps} steps",
                     "no AU or emotion label (identity, pose, pixels)"))
    steps = mini.get("instruct_warmup_steps", 0)
    if steps:
        seen.append(("instruction warm-start", f"no face: {instruct_row_count(steps, values)} text-only guided "
                     f"prompts, {steps} steps",
                     "random AU lists + random emotions (not paired as in faces), with reasoning citing them"))
    return seen


def render_rate(n: int = 200) -> float:
    """SynFACS faces rendered per second on this machine (no writing): a yardstick for wall times."""
    from facial_r1.data.synfacs import make_sample

    start = time.perf_counter()
    for i in range(n):
        make_sample(i, "rate", 112)
    return n / (time.perf_counter() - start)


def _ci(cell: list | None, scale: float = 100.0, signed: bool = False) -> str:
    if cell is None:
        return "-"
    v, lo, hi = (scale * x for x in cell)
    return f"{v:+.1f} [{lo:+.1f}, {hi:+.1f}]" if signed else f"{v:.1f} [{lo:.1f}, {hi:.1f}]"


HEADS = {"au_f1": "AU F1", "accuracy": "accuracy", "emotion_f1": "emotion macro-F1", "rouge_l": "ROUGE-L",
         "format_rate": "format", "cited_per_gold": "AUs cited / true"}


def _cell(key: str, cell: list | None, signed: bool = False) -> str:
    if key in RATIOS and cell is not None:
        v, lo, hi = cell
        return f"{v:+.2f} [{lo:+.2f}, {hi:+.2f}]" if signed else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
    return _ci(cell, signed=signed)


def report_table(result: dict) -> str:
    """Stage by metric in percent (AUs cited per true AU as a ratio), each with its 95 % bootstrap
    CI; '-' where not scored."""
    head = "| stage | " + " | ".join(HEADS[k] for k in METRICS) + " |\n|---|" + "---|" * len(METRICS) + "\n"
    return head + "".join(f"| {r['stage']} | " + " | ".join(_cell(k, r.get(k)) for k in METRICS) + " |\n"
                          for r in result["rows"])


def diff_table(result: dict) -> str:
    """Paired differences (points; the ratio as a ratio), each with its 95 % CI over the same resampled faces."""
    head = "| stage | vs | " + " | ".join(f"Δ {HEADS[k]}" for k in METRICS) + " |\n|---|---|" \
        + "---|" * len(METRICS) + "\n"
    return head + "".join(f"| {d['stage']} | {d['vs']} | " + " | ".join(_cell(k, d.get(k), signed=True)
                                                                      for k in METRICS) + " |\n"
                          for d in result["diffs"])


SAMPLED_HEADS = {"mean_acc": "mean@{k} acc", "maj_acc": "maj@{k} acc", "pass_acc": "pass@{k} acc",
                 "pass_acc_shuffled": "pass@{k} acc, shuffled labels", "mean_au_f1": "mean@{k} AU set-F1"}


def sampled_tables(result: dict) -> str:
    """The sampled metrics per row and their paired differences ('' when none was sampled)."""
    rows = [r for r in result["rows"] if "sampled" in r]
    if not rows:
        return ""
    first = rows[0]["sampled"]
    keys = [k for k in SAMPLED_HEADS if k in first]
    heads = " | ".join(SAMPLED_HEADS[k].format(k=first["k"]) for k in keys)
    text = (f"## Sampled at the training temperature ({first['k']} completions on each of the first "
            f"{first['faces']} held-out faces)\n\n| stage | {heads} |\n|---|" + "---|" * len(keys) + "\n")
    text += "".join(f"| {r['stage']} | " + " | ".join(_ci(r["sampled"].get(k)) for k in keys) + " |\n" for r in rows)
    diffs = [d for d in result["diffs"] if "sampled" in d]
    if diffs:
        text += "\n| stage | vs | " + " | ".join(f"Δ {SAMPLED_HEADS[k].format(k=first['k'])}" for k in keys) \
            + " |\n|---|---|" + "---|" * len(keys) + "\n"
        text += "".join(f"| {d['stage']} | {d['vs']} | " + " | ".join(_ci(d["sampled"].get(k), signed=True)
                                                                    for k in keys) + " |\n" for d in diffs)
    return text + "\n"


def per_au_table(per_au: dict[str, dict]) -> str:
    """Stage by AU: each AU's F1 on the held-out faces (eval's metrics.json), in percent."""
    if not per_au:
        return ""
    aus = sorted({a for v in per_au.values() for a in v}, key=lambda a: int(a[2:]) if a[2:].isdigit() else 999)
    text = "## F1 per AU\n\n| stage | " + " | ".join(aus) + " |\n|---|" + "---|" * len(aus) + "\n"
    return text + "".join(f"| {stage} | " + " | ".join(f"{100 * v[a]:.0f}" if a in v else "-" for a in aus) + " |\n"
                          for stage, v in per_au.items()) + "\n"


def write_report(run: Path, result: dict, seen: list, timings: dict, total: float, rate: float,
                 cached: list | None = None, per_au: dict | None = None) -> None:
    table, diffs = report_table(result), diff_table(result)
    data = "| stage | faces | labels it saw |\n|---|---|---|\n" + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in seen)
    times = "".join(f"| {k} | {v:.0f} |\n" for k, v in timings.items())
    text = (f"# facial-r1 pipeline report: {run}\n\nHeld-out test set ({result['n_faces']} faces), greedy decoding; "
            f"95 % bootstrap CIs ({result['bootstrap']} resamples of the faces) in brackets.\n\n{table}\n"
            f"## Paired differences (the same resampled faces for both rows)\n\n{diffs}\n"
            f"{sampled_tables(result)}{per_au_table(per_au or {})}"
            f"![metrics per stage](metrics.png)\n\n## What each stage trained on\n\n{data}\n"
            f"## Wall time (s)\n\n| step | s |\n|---|---|\n{times}| **total** | **{total:.0f}** |\n\n"
            f"This machine renders {rate:.0f} SynFACS faces/s (one thread, no writing): scale wall times by it.\n"
            + (f"\nCopied from the stage cache (same inputs and source, run before): {', '.join(cached)}; their "
               f"wall times are the copy's.\n" if cached else ""))
    (run / "report.md").write_text(text)
    (run / "metrics.json").write_text(json.dumps({**result, "trained_on": seen, "timings": timings, "total_s": total,
                                                  "render_faces_per_s": rate,
                                                  "cached_stages": cached or [], "per_au": per_au or {}},
                                                 indent=2))
    plot(result["rows"], run / "metrics.png")
    log.info("\n%s\n%s\ntotal wall time %.0f s at %.0f SynFACS faces/s; report: %s", table, diffs, total, rate,
             run / "report.md")


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars, stage by metric, with the 95 % CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("au_f1", "AU F1"), ("accuracy", "accuracy"), ("emotion_f1", "emotion macro-F1"), ("rouge_l", "ROUGE-L"),
            ("format_rate", "format")]
    scored = [r for r in rows if r.get("au_f1") is not None]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(scored))
    for i, r in enumerate(scored):
        xs = [j + (i - (len(scored) - 1) / 2) * width for j in range(len(keys))]
        vals = [100 * (r[k][0] if r.get(k) else 0) for k, _ in keys]
        err = [[100 * (r[k][0] - r[k][1]) if r.get(k) else 0 for k, _ in keys],
               [100 * (r[k][2] - r[k][0]) if r.get(k) else 0 for k, _ in keys]]
        ax.bar(xs, vals, width, yerr=err, capsize=3, label=r["stage"])
    ax.set_xticks(range(len(keys)), [label for _, label in keys])
    ax.set_ylim(0, 105)
    ax.set_ylabel("held-out score (%), 95 % CI")
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
