"""The whole method end to end: data -> SFT on the seed set -> GRPO on the labelled pool ->
rounds of (synthesize -> merge with the seed set -> retrain) -> evaluation after every stage.

    facial-r1 pipeline --config configs/pipeline/tiny-cpu.yaml [--key value ...]

Everything lands under `run_dir`: the data, each stage's checkpoint, each round's synthesized
data and report, each evaluation, and `report.md` + `metrics.png` (stage by metric, wall time).
Stage configs are the stages' own YAML files, with per-stage overrides from this config.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facial_r1 import evaluate, grpo, models, sft, synthesize
from facial_r1.config import read_yaml
from facial_r1.data.schema import read_jsonl, write_jsonl
from facial_r1.errors import FacialR1Error

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    run_dir: str = "runs/tiny-cpu"
    # Data: either SynFACS made here (synfacs: {n, seed, test_fraction, reasoning_fraction}) or
    # real files: seed (with reasoning), pool (AUs/labels only), test, with their image folders.
    synfacs: dict | None = None
    seed_data: str | None = None
    pool_data: str | None = None
    test_data: str | None = None
    image_folders: list = field(default_factory=list)
    # Model: a tiny one built here (tiny_size) or a name/path (model).
    model: str | None = None
    tiny_size: str = "tiny"
    sft_config: str = "configs/sft/tiny-cpu.yaml"
    sft: dict = field(default_factory=dict)  # overrides for the SFT stage
    grpo_config: str = "configs/grpo/tiny-cpu.yaml"
    grpo: dict = field(default_factory=dict)
    rounds: int = 1
    retrain: list = field(default_factory=lambda: ["sft", "grpo"])
    round_sft: dict = field(default_factory=dict)  # overrides for the retraining stages of rounds
    round_grpo: dict = field(default_factory=dict)
    synthesis: dict = field(default_factory=dict)  # Synthesis fields; qc: QualityControl fields
    eval_protocol: str = "synfacs"
    eval_batch_size: int = 25
    eval_max_new_tokens: int = 128


def read_pipeline(config: str, overrides: dict) -> tuple[Pipeline, synthesize.Synthesis]:
    """The pipeline's settings and its synthesis settings, all checked before any stage runs."""
    raw = {**read_yaml(config), **overrides}
    known = set(Pipeline.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FacialR1Error(f"{config}: unknown key(s) {unknown}; pipeline keys are {sorted(known)}")
    p = Pipeline(**raw)
    try:
        qc = synthesize.QualityControl(**p.synthesis.get("qc", {}))
        settings = synthesize.Synthesis(**{k: v for k, v in p.synthesis.items() if k != "qc"}, qc=qc)
    except TypeError as e:
        raise FacialR1Error(f"{config}: synthesis: {e}") from None
    return p, settings


def main(config: str, overrides: dict) -> Path:
    p, settings = read_pipeline(config, overrides)
    run = Path(p.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    log.info("pipeline %s -> %s\n%s", config, run, json.dumps(asdict(p), indent=2))
    rows, timings, t0 = [], {}, time.monotonic()

    with _timed(timings, "data"):
        seed, pool, test, folders = _data(p, run)
    with _timed(timings, "model"):
        base = p.model or str(models.build_tiny(run / "model", p.tiny_size))
    with _timed(timings, "sft"):
        model = sft.main(p.sft_config, {"model": base, "data_paths": [seed], "image_folders": [folders],
                                        "output_dir": str(run / "sft"), **p.sft})
    rows.append(_evaluate(p, "SFT (seed set)", model, test, folders, run, timings))
    with _timed(timings, "grpo"):
        model = grpo.main(p.grpo_config, {"model": str(model), "data_paths": [pool], "image_folders": [folders],
                                          "output_dir": str(run / "grpo"), **p.grpo})
    rows.append(_evaluate(p, "+ GRPO (labelled pool)", model, test, folders, run, timings))

    for k in range(1, p.rounds + 1):
        rdir = run / f"round{k}"
        with _timed(timings, f"round{k} synthesize"):
            report = synthesize.main(str(model), pool, [folders], str(rdir / "synth.jsonl"), settings)
        if not report["kept"]:
            rows.append({"stage": f"round {k}: nothing passed QC, stopped", **report})
            break
        merged = rdir / "sft_data.jsonl"
        write_jsonl(merged, read_jsonl(seed) + read_jsonl(rdir / "synth.jsonl"))
        if "sft" in p.retrain:
            with _timed(timings, f"round{k} sft"):
                model = sft.main(p.sft_config, {"model": str(model), "data_paths": [str(merged)],
                                                "image_folders": [folders], "output_dir": str(rdir / "sft"),
                                                "vision_warmup_seconds": 0, **p.round_sft})
        if "grpo" in p.retrain:
            with _timed(timings, f"round{k} grpo"):
                model = grpo.main(p.grpo_config, {"model": str(model), "data_paths": [pool],
                                                  "image_folders": [folders], "output_dir": str(rdir / "grpo"),
                                                  **p.round_grpo})
        rows.append(_evaluate(p, f"+ round {k} (synth {report['kept']} kept of {report['finished']})", model,
                              test, folders, run, timings))
    total = time.monotonic() - t0
    write_report(run, rows, timings, total)
    return run / "report.md"


def _data(p: Pipeline, run: Path) -> tuple[str, str, str, str]:
    """(seed file, pool file, test file, image folder) for this run."""
    if p.synfacs is not None:
        from facial_r1.data.synfacs import synth_faces

        out = run / "synfacs"
        if not (out / "test.jsonl").is_file():
            synth_faces(out, **p.synfacs)
        samples = read_jsonl(out / "train.jsonl")
        write_jsonl(out / "seed.jsonl", [s for s in samples if s["description"]])
        write_jsonl(out / "pool.jsonl", [s for s in samples if not s["description"]])
        return str(out / "seed.jsonl"), str(out / "pool.jsonl"), str(out / "test.jsonl"), str(out)
    missing = [k for k in ("seed_data", "pool_data", "test_data") if not getattr(p, k)]
    if missing or len(p.image_folders) != 1:
        raise FacialR1Error(f"pipeline: give synfacs, or seed_data, pool_data, test_data and one image folder "
                            f"(missing: {missing or ['image_folders']})")
    return p.seed_data, p.pool_data, p.test_data, p.image_folders[0]


def _evaluate(p: Pipeline, stage: str, model, test: str, folders: str, run: Path, timings: dict) -> dict:
    name = "eval " + stage.split("(")[0].strip(" +:")
    with _timed(timings, name):
        m = evaluate.main(str(model), test, [folders], p.eval_protocol, str(Path(model) / "eval"),
                          p.eval_batch_size, p.eval_max_new_tokens)
    log.info("%s: %s", stage, {k: m.get(k) for k in ("au_f1", "accuracy", "rouge_l", "rege", "format_rate")})
    return {"stage": stage, **{k: m.get(k) for k in ("au_f1", "accuracy", "rouge_l", "rege", "format_rate")}}


class _timed:
    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start = time.monotonic()

    def __exit__(self, *exc):
        self.timings[self.name] = time.monotonic() - self.start


def report_table(rows: list[dict]) -> str:
    """Stage by metric, in percent (REGE as is); '-' where a metric does not apply."""
    head = "| stage | AU F1 | accuracy | ROUGE-L | REGE | format |\n|---|---|---|---|---|---|\n"

    def cell(row, key):
        v = row.get(key)
        return "-" if v is None else (f"{v:.1f}" if key == "rege" else f"{100 * v:.1f}")

    return head + "".join(f"| {r['stage']} | " + " | ".join(cell(r, k) for k in
                          ("au_f1", "accuracy", "rouge_l", "rege", "format_rate")) + " |\n" for r in rows)


def write_report(run: Path, rows: list[dict], timings: dict, total: float) -> None:
    table = report_table(rows)
    times = "".join(f"| {k} | {v:.0f} |\n" for k, v in timings.items())
    text = (f"# facial-r1 pipeline report: {run}\n\nHeld-out test set, greedy decoding.\n\n{table}\n"
            f"![metrics per stage](metrics.png)\n\n## Wall time (s)\n\n| step | s |\n|---|---|\n{times}"
            f"| **total** | **{total:.0f}** |\n")
    (run / "report.md").write_text(text)
    (run / "metrics.json").write_text(json.dumps({"rows": rows, "timings": timings, "total_s": total}, indent=2))
    plot(rows, run / "metrics.png")
    print(table)
    print(f"total wall time {total:.0f} s; report: {run / 'report.md'}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("au_f1", "AU F1"), ("accuracy", "accuracy"), ("rouge_l", "ROUGE-L"), ("format_rate", "format")]
    scored = [r for r in rows if any(r.get(k) is not None for k, _ in keys)]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in keys:
        ax.plot(range(len(scored)), [r.get(key) for r in scored], marker="o", label=label)
    ax.set_xticks(range(len(scored)), [r["stage"].split("(")[0].strip() for r in scored], rotation=15)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("held-out score")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
