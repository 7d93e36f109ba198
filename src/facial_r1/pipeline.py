"""The whole method end to end: data -> SFT on the seed set -> (a same-steps SFT control) ->
GRPO on the labelled pool -> rounds of (synthesize for the pool faces without kept reasoning ->
SFT on the seed set + every kept row -> GRPO) -> evaluation after every stage.

    facial-r1 pipeline --config configs/pipeline/tiny-cpu.yaml [--key value ...] [--check] [--resume]

Every training stage's config is resolved once, before anything runs (`plan`), and checked
by the preflight (`--check` stops there). Each stage then runs from its spec under
`run_dir/stages/` through the launcher (launch.py); a LoRA stage, and a DeepSpeed ZeRO-3 one,
is followed by a merge in one plain process. `--resume` reuses every stage whose inputs are
unchanged. Budgets are optimizer steps and every draw is seeded, so the same config gives the
same numbers; the report (report.py) lands in `run_dir`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facial_r1 import memory, preflight, report, scoring, synthesize
from facial_r1.config import StageConfig, merged, read_yaml, resolve
from facial_r1.data.schema import read_jsonl, write_jsonl
from facial_r1.errors import FacialR1Error
from facial_r1.launch import Kind, LaunchCommand, Launcher, parse_launcher, path_fingerprint, training_module

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
    # Training seed for every stage (tiny init, SFT/GRPO shuffling and sampling, synthesis
    # retries); None: each stage config keeps its own `seed`.
    seed: int | None = None
    sft_config: str = "configs/sft/tiny-cpu.yaml"
    sft: dict = field(default_factory=dict)  # overrides for the SFT stage
    grpo_config: str = "configs/grpo/tiny-cpu.yaml"
    grpo: dict = field(default_factory=dict)
    control: bool = True  # the row "SFT only, as many steps as SFT + GRPO"
    # The test bed's negative control: GRPO from the same SFT model with the same steps, its
    # rewards (and guided prompts) on labels shuffled across faces (grpo.py reward_labels).
    shuffled_control: bool = False
    rounds: int = 1
    retrain: list = field(default_factory=lambda: ["sft", "grpo"])
    round_sft: dict = field(default_factory=dict)  # overrides for the retraining stages of rounds
    round_grpo: dict = field(default_factory=dict)
    synthesis: dict = field(default_factory=dict)  # Synthesis fields; qc: QualityControl fields
    eval_protocol: str = "synfacs"
    eval_batch_size: int = 25
    eval_max_new_tokens: int = 128
    bootstrap: int = 1000  # resamples for the confidence intervals (0 = none)
    # What RL optimises, measured: k completions per face at the GRPO temperature on the first
    # `sample_faces` held-out faces (mean@k, maj@k, pass@k, pass@k on shuffled labels); 0 = off.
    sample_faces: int = 0
    samples_per_face: int = 8
    sample_temperature: float | None = None  # None: the GRPO stage's temperature
    # How each stage (SFT, GRPO, synthesis, eval) runs: "python" (its own fresh process, one
    # device), a launch command that the stage's `-m facial_r1.cli stage SPEC` is appended to
    # ("accelerate launch --config_file configs/accelerate/zero3-8gpu.yaml", "torchrun
    # --nproc_per_node 2"), or "inline" (in this process: one device only, no process start).
    launcher: str = "python"
    # Each evaluation in one plain process of its own, started alongside the next stage instead of
    # before it (on the 2-core CPU one core trains while the other evaluates; the numbers are the
    # same). Off where the stages share devices (GPUs), which the preflight says.
    eval_alongside: bool = False
    # A folder of stage outputs kept by fingerprint (launch.py): a training or eval stage whose
    # inputs and config equal one that ran before (in any run, e.g. another ablation variant of the
    # same seed) is copied from there. None: every stage runs.
    stage_cache: str | None = None


# The miniature warm-starts run once, in the first SFT: the control and each round's SFT
# continue a trained model.
CONTINUED = {"miniature": {"vision_warmup_steps": 0, "instruct_warmup_steps": 0}}


@dataclass
class Planned:
    """One training stage of the run, its config resolved before anything runs."""

    name: str  # "sft", "control", "grpo", "round1 sft", ...
    kind: Kind
    stage: StageConfig


@dataclass
class Plan:
    p: Pipeline
    run: Path
    base: str  # the model the first stage starts from
    seed: str  # seed, pool and test data, one image folder
    pool: str
    test: str
    folders: str
    launch: LaunchCommand
    settings: synthesize.Synthesis
    stages: dict  # name -> Planned

    def config(self, name: str) -> StageConfig:
        return self.stages[name].stage


def read_pipeline(config: str, overrides: dict) -> Pipeline:
    """The pipeline's settings: the file with `overrides` on top (a mapping merged one level,
    so `--grpo '{max_steps: 5}'` keeps the file's other GRPO overrides)."""
    raw = merged(read_yaml(config), overrides)
    known = set(Pipeline.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FacialR1Error(f"{config}: unknown key(s) {unknown}; pipeline keys are {sorted(known)}")
    p = Pipeline(**raw)
    for key, value in (("seed", p.seed), ("synfacs.seed", (p.synfacs or {}).get("seed", 0))):
        if value is not None and not preflight._is_int(value):
            raise FacialR1Error(f"{config}: {key} must be an integer, got {value!r}")
    return p


def plan(config: str, overrides: dict, gpu: int | None = None) -> tuple[Plan, preflight.Findings]:
    """Every stage's resolved config and the preflight's findings, before anything runs.
    `gpu`: bytes of memory per GPU to judge the fit against (default: this machine's GPU)."""
    p = read_pipeline(config, overrides)
    findings = preflight.Findings()
    run = Path(p.run_dir)
    base = p.model or str(run / "model")
    if p.synfacs is not None:
        data = run / "synfacs"
        seed, pool, test = (str(data / f) for f in ("seed.jsonl", "pool.jsonl", "test.jsonl"))
        folders = str(data)
    else:
        seed, pool, test = p.seed_data, p.pool_data, p.test_data
        folders = p.image_folders[0] if len(p.image_folders) == 1 else ""
        missing = [k for k in ("seed_data", "pool_data", "test_data") if not getattr(p, k)]
        if missing or len(p.image_folders) != 1:
            findings.add("pipeline", f"give synfacs, or seed_data, pool_data, test_data and one image folder "
                                     f"(missing: {missing or ['image_folders']})")
        for key, path in (("seed_data", seed), ("pool_data", pool), ("test_data", test)):
            if path and not Path(path).is_file():
                findings.add("pipeline", f"{key} {path} not found")
        if folders and not Path(folders).is_dir():
            findings.add("pipeline", f"image folder {folders} not found")
    launch = parse_launcher(p.launcher)
    for problem in launch.problems:
        findings.add("pipeline", problem)
    try:
        settings = synthesize.Synthesis.from_dict(p.synthesis)
    except (TypeError, FacialR1Error) as e:
        raise FacialR1Error(f"{config}: synthesis: {e}") from None
    if p.seed is not None:
        settings.seed = p.seed
    _check_synthesis_engine(settings, launch, findings)
    if p.eval_alongside and launch.num_processes > 1:
        findings.add("pipeline", f"eval_alongside runs each evaluation beside the next training stage, which "
                                 f"runs in {launch.num_processes} processes: they would share the devices; set "
                                 f"eval_alongside: false")
    if p.eval_protocol not in scoring.PROTOCOLS:
        findings.add("pipeline", f"unknown eval_protocol {p.eval_protocol!r}; choose from {sorted(scoring.PROTOCOLS)}")
    stages = _stages(p, run, base, seed, pool, folders, findings)
    result = Plan(p, run, base, seed, pool, test, folders, launch, settings, stages)
    _check_stages(result, findings, gpu)
    return result, findings


def _stages(p: Pipeline, run: Path, base: str, seed: str, pool: str, folders: str, findings) -> dict:
    """name -> Planned: the training stages in order, each from the model the previous one made.
    A stage whose config does not resolve is left out, its error added to `findings`."""
    common = {"image_folders": [folders]} | ({"seed": p.seed} if p.seed is not None else {})
    specs = [("sft", Kind.SFT, base, seed, run / "sft", "sft", p.sft, {})]
    if p.control:
        specs.append(("control", Kind.SFT, str(run / "sft"), seed, run / "control", "sft", p.sft,
                      {**CONTINUED, "warmup_steps": 0, "max_steps": "grpo"}))
    if p.shuffled_control:
        specs.append(("shuffled", Kind.GRPO, str(run / "sft"), pool, run / "grpo_shuffled", "grpo", p.grpo,
                      {"reward_labels": "shuffled"}))
    specs.append(("grpo", Kind.GRPO, str(run / "sft"), pool, run / "grpo", "grpo", p.grpo, {}))
    previous = str(run / "grpo")
    for k in range(1, p.rounds + 1):
        rdir = run / f"round{k}"
        if "sft" in p.retrain:
            specs.append((f"round{k} sft", Kind.SFT, previous, str(rdir / "sft_data.jsonl"), rdir / "sft",
                          "round_sft", p.round_sft, CONTINUED))
            previous = str(rdir / "sft")
        if "grpo" in p.retrain:
            specs.append((f"round{k} grpo", Kind.GRPO, previous, pool, rdir / "grpo", "round_grpo", p.round_grpo, {}))
            previous = str(rdir / "grpo")
    out = {}
    for name, kind, model, data, output, key, user, fixed in sorted(specs, key=lambda s: s[0] == "control"):
        if fixed.get("max_steps") == "grpo":  # the control: as many steps as GRPO, known once GRPO resolved
            steps = out["grpo"].stage.values.get("max_steps") if "grpo" in out else None
            if steps is None:
                findings.add("control", "needs grpo.max_steps (the control trains SFT that many steps more)")
                continue
            fixed = {**fixed, "max_steps": steps}
        given = {"model": model, "data_paths": [data], "output_dir": str(output), **common, **user, **fixed}
        try:
            stage = resolve(p.sft_config if kind is Kind.SFT else p.grpo_config, given, *_cls(kind), kind.value,
                            origin=f"pipeline key {key}.{{key}}", validate=False)
        except FacialR1Error as e:
            findings.add(name, str(e))
            continue
        out[name] = Planned(name, kind, stage)
    order = [s[0] for s in specs]
    return {name: out[name] for name in order if name in out}


def _cls(kind: Kind):
    module = training_module(kind)
    return module.RUN_CLASS, module.TRL_CLASS


def _check_synthesis_engine(settings: synthesize.Synthesis, launch: LaunchCommand, findings) -> None:
    from facial_r1.generation import resolve_engine

    if settings.engine == "vllm":
        try:
            resolve_engine("vllm", launch.num_processes)
        except FacialR1Error as e:
            findings.add("synthesis", str(e))


def _check_stages(plan_: Plan, findings: preflight.Findings, gpu: int | None) -> None:
    p = plan_.p
    # the data files are made by the run (SynFACS) or checked above, once
    produced = frozenset(str(x) for x in (plan_.seed, plan_.pool, plan_.test, plan_.folders) if x)
    produced |= frozenset([plan_.base] if p.model is None else [])
    produced |= frozenset(str(planned.stage.values["output_dir"]) for planned in plan_.stages.values())
    produced |= frozenset(str(plan_.run / f"round{k}" / "sft_data.jsonl") for k in range(1, p.rounds + 1))
    from facial_r1.tiny import is_tiny

    tiny = p.model is None or (Path(p.model).exists() and is_tiny(p.model))  # every stage descends from the base
    for name, planned in plan_.stages.items():
        preflight.check_stage(planned.stage, plan_.launch.engine, gpu or memory.gpu_bytes(), name, findings,
                              produced=produced, tiny=tiny,
                              mixed_precision=plan_.launch.mixed_precision, params_from=plan_.base, budget=True)
        length = planned.stage.get("max_completion_length") if planned.kind is Kind.GRPO else None
        if planned.kind is Kind.GRPO and length is not None and length < p.eval_max_new_tokens:
            findings.add(name, f"max_completion_length {length} is under eval_max_new_tokens "
                               f"{p.eval_max_new_tokens}: GRPO would cut (and so punish) completions that eval "
                               f"scores whole, which teaches shorter reasoning; raise it")


def main(config: str, overrides: dict, check: bool = False, resume: bool = False,
         gpu_memory_gib: float | None = None) -> Path | None:
    """Plan and check the run; with `check`, stop there (None). Else run it; the report's path."""
    _check_single_process()
    the_plan, findings = plan(config, overrides, int(gpu_memory_gib * memory.GIB) if gpu_memory_gib else None)
    log.info("preflight of %s:\n%s", config, findings.text())
    findings.raise_if_errors()
    if check:
        return None
    return execute(the_plan, resume)


def execute(the: Plan, resume: bool) -> Path:
    p, run = the.p, the.run
    stage = Launcher(p.launcher, run / "stages", resume=resume, cache=Path(p.stage_cache) if p.stage_cache else None)
    try:
        return _execute(the, stage)
    finally:
        stage.close()  # a stage started alongside ends before the run does, whatever stopped it


def _execute(the: Plan, stage: Launcher) -> Path:
    p, run = the.p, the.run
    log.info("pipeline -> %s\n%s", run, json.dumps(asdict(p), indent=2))
    (run / "config.json").write_text(json.dumps(asdict(p), indent=2))
    (run / "inputs.fingerprint").write_text(fingerprint(p))
    timings, seen, t0 = {}, [], time.monotonic()
    produced: dict[str, str] = {}  # output path -> the fingerprint of the stage that wrote it

    with _timed(timings, "data"):
        _make_data(p, run)
    n_seed, n_pool = len(read_jsonl(the.seed)), len(read_jsonl(the.pool))
    with _timed(timings, "model"):
        if p.model is None:
            from facial_r1.tiny import build_tiny

            build_tiny(the.base, p.tiny_size, seed=p.seed or 0)

    def fp(path: str) -> str:
        return produced.get(str(path)) or path_fingerprint(path)

    def train(name: str) -> str:
        planned = the.stages[name]
        values = planned.stage.values
        with _timed(timings, name):
            result = stage(planned.kind, {"model": fp(values["model"]), "data": [fp(d) for d in values["data_paths"]]},
                           config=values, source=f"{planned.stage.source} ({name})")
            seen.extend(report.trained_on(name, planned.stage, result, n_seed, n_pool, synthesized))
            if result.get("lora") or the.launch.engine.zero_stage == 3:  # one plain checkpoint, standard layout
                result = stage(Kind.MERGE, {"model": result["fingerprint"]}, single=True, model=result["model"])
        produced[result["model"]] = result["fingerprint"]
        return result["model"]

    temperature = p.sample_temperature
    if temperature is None and "grpo" in the.stages:
        temperature = the.config("grpo").get("temperature")
    rows: list[tuple[report.Row, scoring.ScoreTable | None]] = []
    sampled: dict[report.Row, scoring.SampledTable] = {}
    per_au: dict[str, dict] = {}  # row label -> {AU: F1}

    alongside: list = []  # (timing name, future, read) of the evaluations started alongside, in order

    def evaluate(row: report.Row, model: str) -> None:
        out = Path(model) / "eval"
        sampling = {"samples_per_face": p.samples_per_face, "sample_faces": p.sample_faces,
                    "temperature": temperature, "seed": p.seed or 0} if p.sample_faces else {}
        inputs = {"model": produced[model], "test": fp(the.test)}
        spec = {"model": model, "data": the.test, "image_folders": [the.folders], "protocol": p.eval_protocol,
                "out": str(out), "batch_size": p.eval_batch_size, "max_new_tokens": p.eval_max_new_tokens, **sampling}
        index = len(rows)
        rows.append((row, None))

        def read() -> None:  # its outputs into the report's rows, in the order the stages ran
            rows[index] = (row, scoring.read_table(the.test, out / "predictions.jsonl", p.eval_protocol))
            per_au[row.label] = json.loads((out / "metrics.json").read_text()).get("au", {}).get("per_au", {})
            if sampling:
                sampled[row] = scoring.read_sampled(the.test, out / "samples.jsonl", p.eval_protocol)
        where = Path(model)  # sft, control, grpo, round1/grpo...: named apart in the timings
        name = f"eval {where.relative_to(run) if where.is_relative_to(run) else where.name}"
        if p.eval_alongside:
            alongside.append((f"{name} (alongside)", stage.alongside(Kind.EVAL, inputs, **spec), read))
            return
        with _timed(timings, name):
            stage(Kind.EVAL, inputs, **spec)
        read()

    synthesized: list[dict] = []  # every row kept so far: each round adds to the reasoning data
    evaluate(report.Row(report.Role.SFT, "SFT"), train("sft"))
    if p.control:
        steps = the.config("control").values["max_steps"]
        evaluate(report.Row(report.Role.CONTROL, f"control: SFT only, +{steps} steps"), train("control"))
    if p.shuffled_control:
        evaluate(report.Row(report.Role.SHUFFLED, "control: GRPO, rewards on shuffled labels"), train("shuffled"))
    model = train("grpo")
    evaluate(report.Row(report.Role.GRPO, "+ GRPO"), model)
    for k in range(1, p.rounds + 1):
        rdir = run / f"round{k}"
        rdir.mkdir(parents=True, exist_ok=True)
        done = {r["id"] for r in synthesized}
        left = [s for s in read_jsonl(the.pool) if s["id"] not in done]
        if not left:
            log.info("round %d: every pool face has kept reasoning; no round left to run", k)
            break
        todo = rdir / "pool_todo.jsonl"  # the pool faces that have no kept reasoning yet
        write_jsonl(todo, left)
        kept_before = [r["description"] for r in synthesized]
        with _timed(timings, f"round{k} synthesize"):
            result = stage(Kind.SYNTHESIZE, {"model": produced[model], "todo": fp(todo)}, model=model, data=str(todo),
                           image_folders=[the.folders], out=str(rdir / "synth.jsonl"), settings=asdict(the.settings),
                           kept_before=kept_before)
        seen.append((f"round {k} synthesis", f"{len(left)} pool faces without kept reasoning",
                     "AUs + emotion, in the guided prompt"))
        if not result["report"]["kept"]:
            log.error("round %d: nothing passed quality control; the method stops here", k)
            rows.append((report.Row(report.Role.ROUND, f"round {k}: nothing kept, stopped", k), None))
            break
        synthesized += read_jsonl(rdir / "synth.jsonl")
        write_jsonl(rdir / "sft_data.jsonl", read_jsonl(the.seed) + synthesized)
        for kind in ("sft", "grpo"):
            if kind in p.retrain:
                model = train(f"round{k} {kind}")
        label = f"+ round {k} ({len(synthesized)} of {n_pool} pool faces kept)"
        evaluate(report.Row(report.Role.ROUND, label, k), model)
    for name, future, read in alongside:
        timings[name] = future.result()["wall_s"]  # a failed evaluation raises its error here
        read()
    total = time.monotonic() - t0
    result = report.summarize(rows, p.bootstrap, p.seed or 0, sampled)
    report.write_report(run, result, seen, timings, total, report.render_rate(), cached=stage.cached,
                        per_au=per_au)
    if stage.reused:
        log.info("resumed: %d stage(s) reused (%s)", len(stage.reused), ", ".join(stage.reused))
    return run / "report.md"


def fingerprint(p: Pipeline) -> str:
    """What a finished run's numbers depend on besides the software: the resolved config, the
    stage configs it reads and facial-r1's own source. The ablation reuses a run only on a match."""
    import hashlib

    from facial_r1.launch import source_fingerprint

    h = hashlib.sha256(json.dumps(asdict(p), sort_keys=True).encode())
    for path in (Path(p.sft_config), Path(p.grpo_config)):
        h.update(f"{path}:".encode() + (path.read_bytes() if path.is_file() else b"missing"))
    h.update(source_fingerprint().encode())
    return h.hexdigest()[:16]


def _make_data(p: Pipeline, run: Path) -> None:
    """SynFACS for this run (reused only when its settings, the fingerprint, are the same)."""
    if p.synfacs is None:
        return
    from facial_r1.data.synfacs import synth_faces

    out = run / "synfacs"
    stamp, fingerprint_ = out / "fingerprint.json", json.dumps(p.synfacs, sort_keys=True)
    if not (stamp.is_file() and stamp.read_text() == fingerprint_ and (out / "test.jsonl").is_file()):
        if out.exists():
            shutil.rmtree(out)
        synth_faces(out, **p.synfacs)
        stamp.write_text(fingerprint_)
    samples = read_jsonl(out / "train.jsonl")
    write_jsonl(out / "seed.jsonl", [s for s in samples if s["description"]])
    write_jsonl(out / "pool.jsonl", [s for s in samples if not s["description"]])


def _check_single_process() -> None:
    """The pipeline is one process that starts the stages; under `accelerate launch` every rank
    would run every stage and write every file."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise FacialR1Error("pipeline: start it as one process (not under accelerate launch or torchrun) and give "
                            "the launch command as launcher, e.g. --launcher 'accelerate launch --config_file "
                            "configs/accelerate/zero3-8gpu.yaml': each stage then runs in fresh processes")


class _timed:
    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start = time.monotonic()

    def __exit__(self, *exc):
        self.timings[self.name] = time.monotonic() - self.start
