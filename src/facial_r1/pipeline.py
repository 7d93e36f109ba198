"""The whole method end to end: data -> SFT on the seed set -> (a same-steps SFT control) ->
GRPO on the labelled pool -> rounds of (synthesize for the pool faces without kept reasoning ->
SFT on the seed set + every kept row -> GRPO) -> evaluation after every stage.

    facial-r1 pipeline --config configs/pipeline/tiny-cpu.yaml [--key value ...]

Budgets are optimizer steps and every draw is seeded, so the same config gives the same
numbers. Everything lands under `run_dir`: the data, each stage's checkpoint and evaluation,
each round's synthesized data and report, and `report.md` / `metrics.json` / `metrics.png`:
every metric with its bootstrap CI, each stage's paired difference from the row before
(`stats.py`), what each stage trained on and which labels it saw, and the wall time.
Stage configs are the stages' own YAML files, with per-stage overrides from this config.
Each stage runs from a spec written to `run_dir/stages/`, in fresh processes started by
`launcher` (python, accelerate launch ..., torchrun ...) or in this process (inline).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facial_r1 import evaluate, grpo, models, sft, stats, synthesize
from facial_r1.config import read_yaml
from facial_r1.data.schema import read_jsonl, write_jsonl
from facial_r1.errors import FacialR1Error
from facial_r1.warmstart import instruct_row_count

log = logging.getLogger(__name__)


# The SFT stage's warm-start budgets (steps); one that continues a trained model (the control,
# each round's SFT) runs none of them.
WARM_STARTS = ("vision_warmup_steps", "instruct_warmup_steps")
CONTINUED = dict.fromkeys(WARM_STARTS, 0)


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
    seed: int = 0  # training seed: tiny init, SFT/GRPO shuffling and sampling, synthesis retries
    sft_config: str = "configs/sft/tiny-cpu.yaml"
    sft: dict = field(default_factory=dict)  # overrides for the SFT stage
    grpo_config: str = "configs/grpo/tiny-cpu.yaml"
    grpo: dict = field(default_factory=dict)
    control: bool = True  # the row "SFT only, as many steps as SFT + GRPO"
    rounds: int = 1
    retrain: list = field(default_factory=lambda: ["sft", "grpo"])
    round_sft: dict = field(default_factory=dict)  # overrides for the retraining stages of rounds
    round_grpo: dict = field(default_factory=dict)
    synthesis: dict = field(default_factory=dict)  # Synthesis fields; qc: QualityControl fields
    eval_protocol: str = "synfacs"
    eval_batch_size: int = 25
    eval_max_new_tokens: int = 128
    bootstrap: int = 1000  # resamples for the confidence intervals (0 = none)
    # How each stage (SFT, GRPO, synthesis, eval) runs: "python" (its own fresh process, one
    # device), a launch command that the stage's `-m facial_r1.cli stage SPEC` is appended to
    # ("accelerate launch --config_file configs/accelerate/zero3-8gpu.yaml", "torchrun
    # --nproc_per_node 2"), or "inline" (in this process: one device only, no process start).
    launcher: str = "python"


def read_pipeline(config: str, overrides: dict) -> tuple[Pipeline, synthesize.Synthesis]:
    """The pipeline's settings and its synthesis settings, all checked before any stage runs."""
    raw = {**read_yaml(config), **overrides}
    known = set(Pipeline.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FacialR1Error(f"{config}: unknown key(s) {unknown}; pipeline keys are {sorted(known)}")
    p = Pipeline(**raw)
    if not _is_int(p.seed):
        raise FacialR1Error(f"{config}: seed must be an integer, got {p.seed!r}")
    if p.synfacs is not None and not _is_int(p.synfacs.get("seed", 0)):
        raise FacialR1Error(f"{config}: synfacs.seed must be an integer, got {p.synfacs['seed']!r}")
    stages = [("sft", p.sft_config, p.sft), ("grpo", p.grpo_config, p.grpo)]
    if p.rounds > 0:
        stages += [(f"round_{k}", getattr(p, f"{k}_config"), getattr(p, f"round_{k}")) for k in p.retrain]
    for name, stage_config, stage in stages:
        _check_budget(config, name, {**read_yaml(stage_config), **stage})
    if p.control and {**read_yaml(p.grpo_config), **p.grpo}.get("max_steps") is None:
        raise FacialR1Error(f"{config}: control needs grpo.max_steps (the control trains SFT that many steps more)")
    try:
        settings = synthesize.Synthesis.from_dict(p.synthesis)
    except TypeError as e:
        raise FacialR1Error(f"{config}: synthesis: {e}") from None
    settings.seed = p.seed
    if not isinstance(p.launcher, str) or not p.launcher.strip():
        raise FacialR1Error(f"{config}: launcher must be python, inline or a launch command, got {p.launcher!r}")
    return p, settings


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_budget(config: str, name: str, stage: dict) -> None:
    """A stage's budget is `max_steps` (optimizer steps), or `num_train_epochs` where a real
    data set sets it; a wall-time guard alone is not a budget: the model would depend on the
    machine's speed."""
    steps, epochs = stage.get("max_steps"), stage.get("num_train_epochs")
    if steps is not None and not (_is_int(steps) and steps > 0):
        raise FacialR1Error(f"{config}: {name}.max_steps must be a positive integer, got {steps!r}")
    if steps is None and not (isinstance(epochs, (int, float)) and epochs > 0):
        raise FacialR1Error(f"{config}: {name}.max_steps is missing: give each stage a budget in steps")
    for key in WARM_STARTS:
        warm = stage.get(key, 0)
        if not (_is_int(warm) and warm >= 0):
            raise FacialR1Error(f"{config}: {name}.{key} must be an integer >= 0, got {warm!r}")


def fingerprint(p: Pipeline) -> str:
    """What a finished run's numbers depend on besides the software: the resolved config, the
    stage configs it reads and facial-r1's own source (a change to the code that builds the
    model or trains it changes the numbers too). The ablation reuses a run only on a match."""
    import hashlib

    h = hashlib.sha256(json.dumps(asdict(p), sort_keys=True).encode())
    package = Path(__file__).parent
    for path in [Path(p.sft_config), Path(p.grpo_config), *sorted(package.rglob("*.py"))]:
        name = path.relative_to(package) if path.is_relative_to(package) else path
        h.update(f"{name}:".encode() + (path.read_bytes() if path.is_file() else b"missing"))
    return h.hexdigest()[:16]


def main(config: str, overrides: dict) -> Path:
    p, settings = read_pipeline(config, overrides)
    _check_single_process(p)
    run = Path(p.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    log.info("pipeline %s -> %s\n%s", config, run, json.dumps(asdict(p), indent=2))
    (run / "config.json").write_text(json.dumps(asdict(p), indent=2))
    (run / "inputs.fingerprint").write_text(fingerprint(p))
    stages, timings, seen, t0 = {}, {}, [], time.monotonic()
    stage = Launcher(p.launcher, run / "stages")

    with _timed(timings, "data"):
        seed, pool, test, folders = _data(p, run)
    n_seed, n_pool = len(read_jsonl(seed)), len(read_jsonl(pool))
    with _timed(timings, "model"):
        base = p.model or str(models.build_tiny(run / "model", p.tiny_size, seed=p.seed))
    common = {"image_folders": [folders], "seed": p.seed}
    sft_run = {**read_yaml(p.sft_config), **p.sft}
    with _timed(timings, "sft"):
        model = stage("sft", config=p.sft_config, overrides={"model": base, "data_paths": [seed],
                                                             "output_dir": str(run / "sft"), **common, **p.sft})
    seen += _warmup_seen(sft_run, n_seed)
    seen.append(("SFT", f"{n_seed} seed faces", "reasoning (which cites the AUs and names the emotion)"))
    stages["SFT"] = _evaluate(p, stage, model, test, folders, timings)
    grpo_steps = {**read_yaml(p.grpo_config), **p.grpo}.get("max_steps")
    if p.control:
        with _timed(timings, "control sft"):
            control = stage("sft", config=p.sft_config, overrides={
                "model": model, "data_paths": [seed], "output_dir": str(run / "control"), **common, **p.sft,
                **CONTINUED, "warmup_steps": 0, "max_steps": grpo_steps})
        seen.append(("control: SFT continued", f"the same {n_seed} seed faces, {grpo_steps} more steps",
                     "reasoning"))
        stages["control: SFT only, +%d steps" % grpo_steps] = _evaluate(p, stage, control, test, folders, timings)
    with _timed(timings, "grpo"):
        model = stage("grpo", config=p.grpo_config, overrides={"model": model, "data_paths": [pool],
                                                               "output_dir": str(run / "grpo"), **common, **p.grpo})
    seen.append(("GRPO", _grpo_faces(p.grpo_config, p.grpo, n_pool), "AUs + emotion, only through the rewards"))
    stages["+ GRPO"] = _evaluate(p, stage, model, test, folders, timings)

    synthesized: list[dict] = []  # every row kept so far: each round adds to the reasoning data
    for k in range(1, p.rounds + 1):
        rdir = run / f"round{k}"
        rdir.mkdir(parents=True, exist_ok=True)
        done = {r["id"] for r in synthesized}
        todo = rdir / "pool_todo.jsonl"  # the pool faces that have no kept reasoning yet
        left = [s for s in read_jsonl(pool) if s["id"] not in done]
        if not left:
            log.info("round %d: every pool face has kept reasoning; no round left to run", k)
            break
        write_jsonl(todo, left)
        with _timed(timings, f"round{k} synthesize"):
            report = stage("synthesize", model=model, data=str(todo), image_folders=[folders],
                           out=str(rdir / "synth.jsonl"), settings=asdict(settings),
                           kept_before=[r["description"] for r in synthesized])["report"]
        seen.append((f"round {k} synthesis", f"{n_pool - len(done)} pool faces without kept reasoning",
                     "AUs + emotion, in the guided prompt"))
        if not report["kept"]:
            log.error("round %d: nothing passed quality control; the method stops here", k)
            stages[f"round {k}: nothing kept, stopped"] = None
            break
        synthesized += read_jsonl(rdir / "synth.jsonl")
        merged = rdir / "sft_data.jsonl"
        write_jsonl(merged, read_jsonl(seed) + synthesized)
        if "sft" in p.retrain:
            with _timed(timings, f"round{k} sft"):
                model = stage("sft", config=p.sft_config, overrides={
                    "model": model, "data_paths": [str(merged)], "output_dir": str(rdir / "sft"), **common,
                    **CONTINUED, **p.round_sft})
            seen.append((f"round {k} SFT", f"{n_seed} seed + {len(synthesized)} synthesized", "reasoning"))
        if "grpo" in p.retrain:
            with _timed(timings, f"round{k} grpo"):
                model = stage("grpo", config=p.grpo_config, overrides={
                    "model": model, "data_paths": [pool], "output_dir": str(rdir / "grpo"), **common, **p.round_grpo})
            seen.append((f"round {k} GRPO", _grpo_faces(p.grpo_config, p.round_grpo, n_pool),
                         "AUs + emotion, only through the rewards"))
        stages[f"+ round {k} ({len(synthesized)} of {n_pool} pool faces kept)"] = _evaluate(p, stage, model, test,
                                                                                           folders, timings)
    total = time.monotonic() - t0
    result = summarize(stages, p.bootstrap, p.seed)
    write_report(run, result, seen, timings, total, render_rate())
    return run / "report.md"


def _data(p: Pipeline, run: Path) -> tuple[str, str, str, str]:
    """(seed file, pool file, test file, image folder) for this run. SynFACS made by an
    earlier run is reused only when its settings (the fingerprint) are the same."""
    if p.synfacs is not None:
        from facial_r1.data.synfacs import synth_faces

        out = run / "synfacs"
        fingerprint = json.dumps(p.synfacs, sort_keys=True)
        stamp = out / "fingerprint.json"
        if not (stamp.is_file() and stamp.read_text() == fingerprint and (out / "test.jsonl").is_file()):
            if out.exists():
                shutil.rmtree(out)
            synth_faces(out, **p.synfacs)
            stamp.write_text(fingerprint)
        samples = read_jsonl(out / "train.jsonl")
        write_jsonl(out / "seed.jsonl", [s for s in samples if s["description"]])
        write_jsonl(out / "pool.jsonl", [s for s in samples if not s["description"]])
        return str(out / "seed.jsonl"), str(out / "pool.jsonl"), str(out / "test.jsonl"), str(out)
    missing = [k for k in ("seed_data", "pool_data", "test_data") if not getattr(p, k)]
    if missing or len(p.image_folders) != 1:
        raise FacialR1Error(f"pipeline: give synfacs, or seed_data, pool_data, test_data and one image folder "
                            f"(missing: {missing or ['image_folders']})")
    return p.seed_data, p.pool_data, p.test_data, p.image_folders[0]


def _grpo_faces(config: str, overrides: dict, n_pool: int) -> str:
    """How many pool prompts GRPO's step budget draws: steps x (completions per step / generations)."""
    g = {**read_yaml(config), **overrides}
    if g.get("max_steps") is None:
        return f"{n_pool} pool faces, {g.get('num_train_epochs')} epoch(s)"
    prompts = g["max_steps"] * g.get("per_device_train_batch_size", 8) * g.get("gradient_accumulation_steps", 1) \
        // g.get("num_generations", 8)
    share = f", {g.get('guided_fraction', 0):.0%} with the guided prompt" if g.get("guided_fraction") else ""
    return f"{prompts} prompts drawn from {n_pool} pool faces ({g['max_steps']} steps{share})"


def _warmup_seen(stage: dict, n_seed: int) -> list[tuple[str, str, str]]:
    seen = []
    steps = stage.get("vision_warmup_steps", 0)
    extra, objective = stage.get("vision_warmup_faces", 0), stage.get("vision_warmup_objective", "labels")
    if steps and objective == "labels":
        seen.append(("vision warm-start", f"{extra} rendered + {n_seed} seed faces, {steps} steps", "AUs + emotion"))
    elif steps:
        seen.append(("vision warm-start", f"{extra} rendered faces, {steps} steps",
                     "no AU or emotion label (identity, pose, pixels)"))
    steps = stage.get("instruct_warmup_steps", 0)
    if steps:
        seen.append(("instruction warm-start", f"no face: {instruct_row_count(steps, stage)} text-only guided "
                     f"prompts, {steps} steps",
                     "random AU lists + random emotions (not paired as in faces), with reasoning citing them"))
    return seen


def _evaluate(p: Pipeline, stage, model: str, test: str, folders: str, timings: dict) -> stats.FaceTable:
    """Evaluate a stage's model on the test set; its per-face table for the statistics."""
    with _timed(timings, f"eval {Path(model).name}"):
        stage("eval", model=model, data=test, image_folders=[folders], protocol=p.eval_protocol,
              out=str(Path(model) / "eval"), batch_size=p.eval_batch_size, max_new_tokens=p.eval_max_new_tokens)
    samples = read_jsonl(test)
    lines = (Path(model) / "eval" / "predictions.jsonl").read_text().splitlines()
    completions = [json.loads(line)["completion"] for line in lines]
    return stats.face_table(samples, completions, p.eval_protocol)


def _check_single_process(p: Pipeline) -> None:
    """The pipeline is one process that starts the stages; under `accelerate launch` every rank
    would run every stage and write every file."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise FacialR1Error("pipeline: start it as one process (not under accelerate launch or torchrun) and give "
                            "the launch command as launcher, e.g. --launcher 'accelerate launch --config_file "
                            "configs/accelerate/zero3-8gpu.yaml': each stage then runs in fresh processes")


class Launcher:
    """Runs one stage from its spec, written to `folder/NN-kind.json` (a record of exactly what
    ran): in this process ("inline") or in fresh processes started by the launch command, whose
    main process writes the stage's result to `NN-kind.result.json`. Fresh processes share no state
    with this one or with other stages: no DeepSpeed config left alive after a ZeRO-3 stage, no
    memory of the previous stage, and every file written once, by the stage's main process."""

    def __init__(self, launcher: str, folder: Path):
        import shlex
        import sys

        self.inline = launcher.strip() == "inline"
        words = shlex.split(launcher)
        self.command = [sys.executable] if words == ["python"] else words
        self.folder, self.count = folder, 0
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):  # an earlier run's specs and results: not this run's record
            old.unlink()

    def __call__(self, kind: str, **spec):
        import subprocess

        self.count += 1
        path = self.folder / f"{self.count:02d}-{kind}.json"
        path.write_text(json.dumps({"stage": kind, **spec}, indent=1))
        if self.inline:
            return _stage_output(run_stage(json.loads(path.read_text())))
        result = path.with_suffix(".result.json")
        result.unlink(missing_ok=True)
        command = [*self.command, "-m", "facial_r1.cli", "stage", str(path)]
        log.info("stage %s: %s", path.name, " ".join(command))
        done = subprocess.run(command)
        if done.returncode != 0 or not result.is_file():
            raise FacialR1Error(f"stage {path} failed (exit code {done.returncode}); its command: {' '.join(command)}")
        return _stage_output(json.loads(result.read_text()))


def _stage_output(result: dict):
    return result["model"] if "model" in result else result


def run_stage(spec: dict) -> dict:
    """One stage from its spec (what `facial-r1 stage SPEC.json` runs in each process): the
    checkpoint it trained, or the synthesis report, with the process facts."""
    import os

    kind, args = spec["stage"], {k: v for k, v in spec.items() if k != "stage"}
    if kind in ("sft", "grpo"):
        module = sft if kind == "sft" else grpo
        out = {"model": str(module.main(args["config"], args["overrides"]))}
    elif kind == "eval":
        evaluate.main(**args)
        out = {}
    elif kind == "synthesize":
        settings = synthesize.Synthesis.from_dict(args.pop("settings"))
        out = {"report": synthesize.main(settings=settings, **args)}
    else:
        raise FacialR1Error(f"unknown stage {kind!r}")
    state = models.process_state()
    return {**out, "pid": os.getpid(), "num_processes": state.num_processes}


class _timed:
    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start = time.monotonic()

    def __exit__(self, *exc):
        self.timings[self.name] = time.monotonic() - self.start


def summarize(stages: dict, n_boot: int, seed: int) -> dict:
    """Rows (each metric with its bootstrap CI) and the paired differences: each stage against
    the row before it (the control against SFT; GRPO against SFT and against the control)."""
    names = [k for k, v in stages.items() if v is not None]
    rows = [{"stage": k, **stats.bootstrap(stages[k], n_boot, seed)} for k in names]
    rows += [{"stage": k} for k, v in stages.items() if v is None]
    pairs, previous = [], None
    for k in names:
        if k.startswith("control"):
            pairs.append((k, "SFT"))
            continue
        if previous is not None:
            pairs.append((k, previous))
        if k == "+ GRPO":
            pairs += [(k, c) for c in names if c.startswith("control")]
        previous = k
    diffs = [{"stage": b, "vs": a, **stats.paired_difference(stages[b], stages[a], n_boot, seed)} for b, a in pairs]
    return {"rows": rows, "diffs": diffs, "n_faces": len(stages[names[0]].ids) if names else 0,
            "bootstrap": n_boot}


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


def report_table(result: dict) -> str:
    """Stage by metric in percent, each with its 95 % bootstrap CI; '-' where not scored."""
    keys = stats.METRICS
    head = "| stage | AU F1 | accuracy | ROUGE-L | format |\n|---|---|---|---|---|\n"
    return head + "".join(f"| {r['stage']} | " + " | ".join(_ci(r.get(k)) for k in keys) + " |\n"
                          for r in result["rows"])


def diff_table(result: dict) -> str:
    """Paired differences (points), each with its 95 % CI over the same resampled faces."""
    head = "| stage | vs | Δ AU F1 | Δ accuracy | Δ ROUGE-L | Δ format |\n|---|---|---|---|---|---|\n"
    return head + "".join(f"| {d['stage']} | {d['vs']} | " + " | ".join(_ci(d[k], signed=True) for k in stats.METRICS)
                          + " |\n" for d in result["diffs"])


def write_report(run: Path, result: dict, seen: list, timings: dict, total: float, rate: float) -> None:
    table, diffs = report_table(result), diff_table(result)
    data = "| stage | faces | labels it saw |\n|---|---|---|\n" + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in seen)
    times = "".join(f"| {k} | {v:.0f} |\n" for k, v in timings.items())
    text = (f"# facial-r1 pipeline report: {run}\n\nHeld-out test set ({result['n_faces']} faces), greedy decoding; "
            f"95 % bootstrap CIs ({result['bootstrap']} resamples of the faces) in brackets.\n\n{table}\n"
            f"## Paired differences (the same resampled faces for both rows)\n\n{diffs}\n"
            f"![metrics per stage](metrics.png)\n\n## What each stage trained on\n\n{data}\n"
            f"## Wall time (s)\n\n| step | s |\n|---|---|\n{times}| **total** | **{total:.0f}** |\n\n"
            f"This machine renders {rate:.0f} SynFACS faces/s (one thread, no writing): scale wall times by it.\n")
    (run / "report.md").write_text(text)
    (run / "metrics.json").write_text(json.dumps({**result, "trained_on": seen, "timings": timings, "total_s": total,
                                                  "render_faces_per_s": rate}, indent=2))
    plot(result["rows"], run / "metrics.png")
    print(table)
    print(diffs)
    print(f"total wall time {total:.0f} s at {rate:.0f} SynFACS faces/s; report: {run / 'report.md'}")


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars, stage by metric, with the 95 % CI as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("au_f1", "AU F1"), ("accuracy", "accuracy"), ("rouge_l", "ROUGE-L"), ("format_rate", "format")]
    scored = [r for r in rows if r.get("au_f1") is not None]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(scored))
    for i, r in enumerate(scored):
        xs = [j + (i - (len(scored) - 1) / 2) * width for j in range(len(keys))]
        vals = [100 * r[k][0] for k, _ in keys]
        err = [[100 * (r[k][0] - r[k][1]) for k, _ in keys], [100 * (r[k][2] - r[k][0]) for k, _ in keys]]
        ax.bar(xs, vals, width, yerr=err, capsize=3, label=r["stage"])
    ax.set_xticks(range(len(keys)), [label for _, label in keys])
    ax.set_ylim(0, 105)
    ax.set_ylabel("held-out score (%), 95 % CI")
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
