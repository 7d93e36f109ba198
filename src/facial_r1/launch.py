"""Launching pipeline stages: each from its spec (`run_dir/stages/NN-kind.json`), in fresh
processes of the user's launch command or in this process ("inline"); the stage's main process
writes its result record (`NN-kind.result.json`), which carries the fingerprint of its inputs.

    facial-r1 stage runs/x/stages/03-grpo.json     # what the launch command starts, per process

Launch commands: "python" (one fresh process), "inline" (this process), `accelerate launch
[--config_file F] [--num_processes N] ...` or `torchrun --nproc_per_node N ...`; accelerate's and
torch's own argument parsers read them, so the preflight knows the world size and the engine.
A merge stage always runs in one plain process, and so does a stage started `alongside` (the
pipeline's `eval_alongside`: each evaluation beside the next stage); one of those that failed
stops the next stage from starting. With `resume`, a stage whose result record carries the same
input fingerprint is not run again, up to the first one that differs.

Fingerprints name paths relative to the run folder, so the same stage of another run (another
variant of an ablation, with the same seed) has the same one. With a `cache` folder, a training,
merge or eval stage that ran is kept there under its fingerprint and facial-r1's source, and a
run that meets the same stage again copies its outputs instead of running it.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from facial_r1.errors import FacialR1Error
from facial_r1.memory import Engine

log = logging.getLogger(__name__)


class Kind(str, enum.Enum):
    """What a stage process runs."""

    SFT = "sft"
    GRPO = "grpo"
    MERGE = "merge"
    SYNTHESIZE = "synthesize"
    EVAL = "eval"


@dataclass(frozen=True)
class LaunchCommand:
    """A launcher as the preflight sees it: the words, how many processes, on what engine."""

    words: tuple[str, ...]
    inline: bool = False
    engine: Engine = Engine()
    mixed_precision: str | None = None  # what accelerate's config sets ("no", "bf16", "fp16"), None: the stage's
    problems: tuple[str, ...] = ()  # what cannot run: a missing program or config, DeepSpeed not installed

    @property
    def num_processes(self) -> int:
        return self.engine.num_processes


def parse_launcher(text: str) -> LaunchCommand:
    """Read a launch command with the launcher's own argument parser."""
    words = shlex.split(text or "")
    if words == ["inline"]:
        return LaunchCommand(("inline",), inline=True)
    if words == ["python"]:
        return LaunchCommand((sys.executable,))
    if not words:
        return LaunchCommand((), problems=("launcher is empty: give python, inline or a launch command",))
    if words[:2] == ["accelerate", "launch"]:
        return _accelerate(words)
    if Path(words[0]).name == "torchrun" or words[1:3] == ["-m", "torch.distributed.run"]:
        return _torchrun(words)
    problems = () if program(words[0]) else (f"launcher program {words[0]!r} not found",)
    return LaunchCommand(tuple(words), problems=problems + (
        f"launcher {text!r}: facial-r1 reads python, inline, accelerate launch and torchrun; with another "
        f"command it cannot tell the number of processes",))


def program(name: str) -> str | None:
    """A launcher program's path: on PATH, or beside this Python (a virtual environment's bin/,
    which `.venv/bin/python -m ...` does not put on PATH)."""
    sibling = Path(sys.executable).parent / name
    return shutil.which(name) or (str(sibling) if sibling.is_file() else None)


def _accelerate(words: list[str]) -> LaunchCommand:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    found = program("accelerate")
    problems = [] if found else ["launcher program 'accelerate' not found"]
    words = [found or "accelerate", *words[1:]]
    try:
        args = launch_command_parser().parse_args([*words[2:], "script"])
    except SystemExit:
        return LaunchCommand(tuple(words), problems=(f"launcher: accelerate launch cannot read {shlex.join(words[2:])}",))
    config = None
    if args.config_file:
        if not Path(args.config_file).is_file():
            problems.append(f"launcher: accelerate config {args.config_file} not found")
        else:
            config = load_config_from_file(args.config_file)
    processes = args.num_processes or (config.num_processes if config and config.num_processes > 0 else 1)
    machines = args.num_machines or (config.num_machines if config else 1)
    ds = dict(getattr(config, "deepspeed_config", None) or {})
    deepspeed = args.use_deepspeed or (config is not None and str(config.distributed_type).endswith("DEEPSPEED"))
    zero = None
    if deepspeed:
        zero = int(args.zero_stage if args.zero_stage is not None else ds.get("zero_stage", 2))
        from importlib.util import find_spec

        if find_spec("deepspeed") is None:
            problems.append("launcher uses DeepSpeed, which is not installed (pip install deepspeed)")
    offload_opt = (args.offload_optimizer_device or ds.get("offload_optimizer_device") or "none") != "none"
    offload_par = (args.offload_param_device or ds.get("offload_param_device") or "none") != "none"
    mixed = args.mixed_precision or (config.mixed_precision if config else None)
    engine = Engine(processes, machines, zero, offload_opt, offload_par)
    return LaunchCommand(tuple(words), engine=engine, mixed_precision=str(mixed) if mixed else None,
                         problems=tuple(problems))


def _torchrun(words: list[str]) -> LaunchCommand:
    from torch.distributed.run import get_args_parser

    start = 1 if Path(words[0]).name == "torchrun" else 3
    try:
        args = get_args_parser().parse_args([*words[start:], "script"])
    except SystemExit:
        return LaunchCommand(tuple(words), problems=(f"launcher: torchrun cannot read {shlex.join(words[start:])}",))
    nodes = int(str(args.nnodes).split(":")[-1])
    per_node = int(args.nproc_per_node) if str(args.nproc_per_node).isdigit() else 1
    found = program(words[0])
    problems = () if found else (f"launcher program {words[0]!r} not found",)
    words = [found or words[0], *words[1:]]
    return LaunchCommand(tuple(words), engine=Engine(per_node * nodes, nodes), problems=problems)


def path_fingerprint(path: str | Path) -> str:
    """What a file or checkpoint folder holds: a small file's bytes; a large one's size with its
    first and last MiB; a folder's file names with those (images in folders are not read)."""
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
    if not files:
        h.update(f"missing:{path}".encode())
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{size}:".encode())
        with open(f, "rb") as fh:
            if size <= 64 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read())
    return h.hexdigest()[:16]


def source_fingerprint() -> str:
    """facial-r1's own source: a change to the code that trains changes the numbers."""
    h = hashlib.sha256()
    package = Path(__file__).parent
    for f in sorted(package.rglob("*.py")):
        h.update(f"{f.relative_to(package)}:".encode() + f.read_bytes())
    return h.hexdigest()[:16]


class Launcher:
    """Runs stages from their specs, in order, numbering them; with `resume`, reuses each stage
    whose recorded input fingerprint matches, until the first that does not."""

    def __init__(self, launcher: str, folder: Path, resume: bool = False, cache: Path | None = None):
        self.command = parse_launcher(launcher)
        self.folder, self.count, self.reusing = folder, 0, resume
        self.run = folder.parent  # paths under it are named relative to it in fingerprints and the cache
        self.cache = Path(cache) if cache else None
        self.reused: list[str] = []
        self.cached: list[str] = []  # stages copied from the cache
        self._side: ThreadPoolExecutor | None = None  # runs the stages started `alongside`
        self._started: list[Future] = []  # their futures, checked before every later stage
        folder.mkdir(parents=True, exist_ok=True)
        if not resume:
            for old in folder.glob("*.json"):  # an earlier run's specs and results: not this run's record
                old.unlink()

    def __call__(self, kind: Kind, inputs: dict, single: bool = False, **spec) -> dict:
        """Run one stage; `inputs` names the fingerprints of what it reads (the spec holds the rest)."""
        return self._stage(kind, inputs, single, spec)()

    def alongside(self, kind: Kind, inputs: dict, **spec) -> Future:
        """Start one stage in a plain process of its own and return at once, so the caller's next
        stage runs beside it (one core trains while the other evaluates); its result is the
        future's. Numbered, fingerprinted, reused and cached as `__call__` does; stages started
        this way run one at a time, in the order given."""
        if self._side is None:
            self._side = ThreadPoolExecutor(1, thread_name_prefix="alongside")
        job = self._stage(kind, inputs, True, spec, process=True)

        def timed() -> dict:
            start = time.monotonic()
            return {**job(), "wall_s": time.monotonic() - start}
        future = self._side.submit(timed)
        self._started.append(future)
        return future

    def _stage(self, kind: Kind, inputs: dict, single: bool, spec: dict, process: bool = False):
        """The bookkeeping of one stage, done now (its number, spec, fingerprint, reuse); returns
        what runs it (or reads its reused result). A stage started alongside that failed raises its
        error here: the run stops at the next stage, not at its end."""
        for future in self._started:
            if future.done() and future.exception() is not None:
                raise future.exception()
        self.count += 1
        path = self.folder / f"{self.count:02d}-{kind.value}.json"
        body = {"stage": kind.value, **spec}
        portable = json.dumps([body, inputs], sort_keys=True, default=str).replace(str(self.run), "<run>")
        stamp = hashlib.sha256(portable.encode()).hexdigest()[:16]
        result_file = path.with_suffix(".result.json")
        if self.reusing and result_file.is_file():
            result = json.loads(result_file.read_text())
            if result.get("fingerprint") == stamp and json.loads(path.read_text()) == body:
                self.reused.append(path.name)
                if result.get("source") != source_fingerprint():
                    log.warning("stage %s: reused, computed by another version of facial-r1's source", path.name)
                log.info("stage %s: reused (inputs unchanged)", path.name)
                return lambda: result
        self.reusing = False  # every later stage runs again
        result_file.unlink(missing_ok=True)
        path.write_text(json.dumps(body, indent=1))
        (self.folder / f"{path.stem}.fingerprint").write_text(stamp)
        entry = self.cache / f"{stamp}-{source_fingerprint()}" if self.cache and kind in CACHED else None

        def run() -> dict:
            if entry is not None and (entry / "result.json").is_file():
                return self._from_cache(entry, path)
            self._run(path, body, single, process)
            result = json.loads(result_file.read_text())
            if entry is not None:
                self._to_cache(entry, kind, body, result, result_file)
            return result
        return run

    def close(self) -> None:
        """Wait for the stages started alongside (their errors are their futures')."""
        if self._side is not None:
            self._side.shutdown(wait=True)
            self._side = None

    def _run(self, path: Path, body: dict, single: bool, process: bool = False) -> None:
        result_file = path.with_suffix(".result.json")
        if self.command.inline and not process:
            write_result(path, run_stage(body))
        else:
            words = [sys.executable] if single else list(self.command.words)
            command = [*words, "-m", "facial_r1.cli", "stage", str(path)]
            log.info("stage %s: %s", path.name, shlex.join(command))
            done = subprocess.run(command)
            if done.returncode != 0 or not result_file.is_file():
                raise FacialR1Error(f"stage {path} failed (exit code {done.returncode}); its command: "
                                    f"{shlex.join(command)}")

    def _to_cache(self, entry: Path, kind: Kind, body: dict, result: dict, result_file: Path) -> None:
        """Keep the stage's outputs (the checkpoint, or eval's folder) under its fingerprint; atomic."""
        outputs = [body["out"]] if kind is Kind.EVAL else [result["model"]]
        tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")  # two runs may keep the same stage at once
        shutil.rmtree(tmp, ignore_errors=True)
        for out in outputs:
            rel = Path(out).relative_to(self.run)  # a stage's outputs lie in the run folder
            shutil.copytree(out, tmp / "files" / rel)
        (tmp / "result.json").write_text(result_file.read_text().replace(str(self.run), "<run>"))
        (tmp / "outputs.json").write_text(json.dumps([str(Path(o).relative_to(self.run)) for o in outputs]))
        if (entry / "result.json").is_file():  # kept meanwhile by another run: the same stage, the same outputs
            shutil.rmtree(tmp)
            return
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)

    def _from_cache(self, entry: Path, path: Path) -> dict:
        for rel in json.loads((entry / "outputs.json").read_text()):
            target = self.run / rel
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(entry / "files" / rel, target)
        text = (entry / "result.json").read_text().replace("<run>", str(self.run))
        tmp = path.with_suffix(".result.json.tmp")
        tmp.write_text(text)
        tmp.replace(path.with_suffix(".result.json"))
        self.cached.append(path.name)
        log.info("stage %s: copied from the stage cache %s (same inputs, same source)", path.name, entry)
        return json.loads(text)


def write_result(spec_path: Path, result: dict) -> None:
    """The stage's result next to its spec (atomically), with the input fingerprint it ran on."""
    stamp = spec_path.parent / f"{spec_path.stem}.fingerprint"
    record = {**result, "fingerprint": stamp.read_text() if stamp.is_file() else None, "source": source_fingerprint()}
    tmp = spec_path.with_suffix(".result.json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(spec_path.with_suffix(".result.json"))


def run_stage(spec: dict) -> dict:
    """One stage from its spec (what `facial-r1 stage SPEC.json` runs in each process): the
    checkpoint it trained (and whether it is a LoRA adapter), or the synthesis report."""
    from facial_r1 import checkpoints, evaluate, synthesize
    from facial_r1.generation import process_state

    kind, args = Kind(spec["stage"]), {k: v for k, v in spec.items() if k != "stage"}
    if kind in TRAINING:
        out = training_module(kind).train(stage_config(kind, args["config"], args.get("source", "spec")))
    elif kind is Kind.MERGE:
        out = {"model": str(checkpoints.merge(args["model"])), "lora": False}
    elif kind is Kind.EVAL:
        evaluate.main(**args)
        out = {}
    else:
        settings = synthesize.Synthesis.from_dict(args.pop("settings"))
        out = {"report": synthesize.main(settings=settings, **args)}
    state = process_state()
    return {**out, "pid": os.getpid(), "num_processes": state.num_processes}


def stage_config(kind: Kind, values: dict, source: str = "spec"):
    """A resolved training config (`StageConfig`) back from the values a spec holds."""
    from facial_r1.config import StageConfig

    module = training_module(kind)
    return StageConfig(kind.value, values, module.RUN_CLASS, module.TRL_CLASS, source)


TRAINING = (Kind.SFT, Kind.GRPO)
CACHED = (Kind.SFT, Kind.GRPO, Kind.MERGE, Kind.EVAL)  # the stages whose outputs a stage cache keeps


def training_module(kind: Kind):
    """The module of a training stage: `train(StageConfig)`, `RUN_CLASS`, `TRL_CLASS`."""
    from facial_r1 import grpo, sft

    return {Kind.SFT: sft, Kind.GRPO: grpo}[kind]
