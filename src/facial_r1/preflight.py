"""The preflight: every check a run could fail after hours of compute, made before any, with
every problem reported at once, each naming its stage and key.

    facial-r1 pipeline --check --config configs/pipeline/qwen2.5-vl-7b.yaml [--gpu-memory-gib 80]
    facial-r1 sft --check --config configs/sft/qwen2.5-vl-7b.yaml

It reads each stage's resolved config (`config.StageConfig`) as the stage will: TRL's config
classes, data paths against their sampling rules and image folders, GRPO's generation batch
against `num_generations` x processes, rewards and their options, the miniature section,
output folders, mixed precision against the launcher's, and the model states' memory per GPU
(`memory.py`): a stage that cannot fit is refused with the alternatives that would.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from facial_r1 import memory
from facial_r1.config import StageConfig
from facial_r1.errors import FacialR1Error

log = logging.getLogger(__name__)


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    estimates: list[str] = field(default_factory=list)  # one line per training stage
    warnings: list[str] = field(default_factory=list)  # runs, but likely not what the user wants

    def add(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")

    def text(self) -> str:
        lines = ["memory per GPU (model states: weights, gradients, optimizer; not activations):",
                 *(f"  {e}" for e in self.estimates)] if self.estimates else []
        if self.warnings:
            lines += [f"{len(self.warnings)} warning(s):", *(f"  - {w}" for w in self.warnings)]
        if self.errors:
            lines += [f"{len(self.errors)} problem(s):", *(f"  - {e}" for e in self.errors)]
        return "\n".join(lines) or "no problem found"

    def raise_if_errors(self) -> None:
        if self.errors:
            raise FacialR1Error("preflight found problems:\n" + self.text())


def check_stage(stage: StageConfig, engine: memory.Engine, gpu: int | None, where: str, findings: Findings,
                produced: frozenset = frozenset(), tiny: bool | None = None, mixed_precision: str | None = None,
                params_from: str | None = None, budget: bool = False, processes_known: bool = False) -> None:
    """Add every problem of one training stage to `findings`. `produced`: paths an earlier stage
    writes (not there yet); `tiny`: whether the model is the embedded one (None: read it);
    `params_from`: a checkpoint of the same architecture to count parameters on (the stage's
    own model may not exist yet); `budget`: require a step budget (the pipeline's rule)."""
    run = stage.project()
    if run.model not in produced and not _exists(run.model):
        findings.add(where, f"model {run.model} not found")
    _miniature(run, stage.kind, where, findings, tiny)
    _data(run, where, findings, produced)
    if budget:
        _budget(stage, where, findings)
    _output(str(stage.values.get("output_dir", "")), where, findings)
    _memory(run, engine, gpu, where, findings, params_from, produced)
    try:
        # TRL's own checks, on the launcher's processes (in a stage process, TRL knows its own)
        _, args = stage.build(processes=None if processes_known else engine.num_processes)
    except FacialR1Error as e:  # the rest of the checks need TRL's config
        findings.add(where, str(e))
        return
    if stage.kind == "grpo":
        _grpo(run, args, where, findings)
    _precision(args, mixed_precision, where, findings)


def check_stage_here(stage: StageConfig) -> None:
    """The check a stage process makes at its start (`facial-r1 sft`, `grpo`, a pipeline stage),
    under the engine and GPU it runs on; raises listing every problem."""
    findings = Findings()
    try:
        _, args = stage.build()
    except FacialR1Error as e:
        raise FacialR1Error(f"{stage.kind}: {e}") from None
    check_stage(stage, memory.current_engine(args), memory.gpu_bytes(), stage.kind, findings, processes_known=True)
    for line in findings.estimates:
        log.info("memory: %s", line)
    findings.raise_if_errors()


def _miniature(run, kind: str, where: str, findings: Findings, tiny: bool | None) -> None:
    from facial_r1.miniature import Miniature

    try:
        Miniature.from_config(run.miniature, run.model, kind, tiny=_is_tiny(run.model) if tiny is None else tiny)
    except FacialR1Error as e:
        findings.add(where, str(e))


def _is_tiny(model: str) -> bool:
    from facial_r1.tiny import is_tiny

    return Path(model).exists() and is_tiny(model)


def _data(run, where: str, findings: Findings, produced: frozenset) -> None:
    from facial_r1.data.mixture import sample_rule

    paths = [run.data_paths] if isinstance(run.data_paths, str) else list(run.data_paths or [])
    folders = [run.image_folders] if isinstance(run.image_folders, str) else list(run.image_folders or [])
    if not paths:
        findings.add(where, "data_paths is empty")
    if len(folders) not in (1, len(paths)):
        findings.add(where, f"{len(folders)} image_folders for {len(paths)} data_paths (give one, or one per file)")
    if run.data_sampling is not None:
        if len(run.data_sampling) != len(paths):
            findings.add(where, f"{len(run.data_sampling)} data_sampling rules for {len(paths)} data_paths "
                                f"{paths}: give one rule per file, or none")
        for rule in run.data_sampling:
            try:
                sample_rule(rule, [], 0, "data_sampling")
            except FacialR1Error as e:
                findings.add(where, str(e))
    for path in paths:
        if str(path) not in produced and not Path(path).is_file():
            findings.add(where, f"data file {path} not found")
    for folder in folders:
        for f in str(folder).split(","):
            if f not in produced and not Path(f).is_dir():
                findings.add(where, f"image folder {f} not found")


def _budget(stage: StageConfig, where: str, findings: Findings) -> None:
    """A stage's budget is `max_steps` (optimizer steps), or `num_train_epochs` where a real data set
    sets it; a wall-time guard alone is not a budget: the model would depend on the machine's speed."""
    steps, epochs = stage.values.get("max_steps"), stage.values.get("num_train_epochs")
    if steps is not None and not (_is_int(steps) and steps > 0):
        findings.add(where, f"max_steps must be a positive integer, got {steps!r}")
    if steps is None and not (isinstance(epochs, (int, float)) and epochs > 0):
        findings.add(where, "max_steps is missing: give each stage a budget in steps")
    for key, warm in (stage.values.get("miniature") or {}).items():
        if key.endswith("_steps") and not (_is_int(warm) and warm >= 0):
            findings.add(where, f"miniature.{key} must be an integer >= 0, got {warm!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _grpo(run, args, where: str, findings: Findings) -> None:
    from facial_r1.rewards import KNOWN

    unknown = [r for r in run.rewards if r not in KNOWN]
    if unknown:
        findings.add(where, f"unknown reward(s) {unknown}; choose from {KNOWN}")
    if args.reward_weights is not None and len(args.reward_weights) != len(run.rewards):
        findings.add(where, f"{len(args.reward_weights)} reward_weights for {len(run.rewards)} rewards")
    if run.au_rarity_weighting and (args.scale_rewards == "group"
                                    or args.multi_objective_aggregation == "normalize_then_sum"):
        findings.add(where, "au_rarity_weighting scales a row's rewards, and dividing by its own group's spread "
                            "(scale_rewards: group, or normalize_then_sum) cancels it: use scale_rewards: batch or none")
    if run.reward_labels not in ("own", "shuffled"):
        findings.add(where, f"reward_labels must be own or shuffled, got {run.reward_labels!r}")
    if not args.mask_truncated_completions:
        findings.warn(where, f"mask_truncated_completions is off: a completion cut at max_completion_length "
                             f"({args.max_completion_length}) loses its format and answer rewards, which teaches "
                             f"shorter reasoning (fewer AUs cited)")
    if run.token_credit and args.multi_objective_aggregation != "sum_then_normalize":
        findings.add(where, "token_credit needs multi_objective_aggregation: sum_then_normalize "
                            "(per-reward shares of a summed advantage)")


def _output(output_dir: str, where: str, findings: Findings) -> None:
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        findings.add(where, f"output_dir {out} is a file")
    parent = next((p for p in [out, *out.parents] if p.exists()), None)
    if parent is not None and parent.is_file():
        findings.add(where, f"output_dir {out} is under a file ({parent})")


def _precision(args, mixed_precision: str | None, where: str, findings: Findings) -> None:
    if mixed_precision is None:
        return
    stage = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    if str(mixed_precision) != stage:
        findings.add(where, f"the launcher's accelerate config has mixed_precision {mixed_precision}, the stage "
                            f"{stage} (bf16: {args.bf16}, fp16: {args.fp16}): make them agree")


@functools.lru_cache(maxsize=16)
def _params(model: str, lora: str, freeze_vision: bool):
    return memory.count_params(model, json.loads(lora), freeze_vision)


def _memory(run, engine: memory.Engine, gpu: int | None, where: str, findings: Findings,
            params_from: str | None, produced: frozenset) -> None:
    source = params_from or run.model
    if source in produced or not _exists(source):  # built by the run, or missing (an error already)
        return
    params = _params(source, json.dumps(run.lora, sort_keys=True), run.freeze_vision)
    if params is None:
        findings.estimates.append(f"{where}: no estimate ({source}'s config is not at hand)")
        return
    try:
        need = memory.estimate(params, run.dtype, run.lora, engine)
    except ImportError as e:
        findings.estimates.append(f"{where}: no estimate ({e})")
        return
    line = (f"{where}: {_size(need.per_gpu)} ({_count(params.total)} parameters, {_count(params.trainable)} "
            f"trained, {need.weights_dtype} weights; {engine.describe()}; {need.how})")
    if gpu is None:
        findings.estimates.append(line + "; no GPU here to compare with (--gpu-memory-gib)")
        return
    findings.estimates.append(line + f"; GPU {gpu / memory.GIB:.0f} GiB")
    if memory.fits(need, gpu):
        return
    if need.weights_dtype == "float32" and run.dtype in ("bfloat16", "float16") and not run.lora:
        low = memory.estimate(params, run.dtype, None, engine, upcast=False)
        if memory.fits(low, gpu):
            findings.estimates.append(f"{where}: float32 master weights do not fit: {run.dtype} weights, "
                                      f"{low.gib():.1f} GiB (small updates may round away)")
            return
    options = "; ".join(memory.alternatives(source, params, run.dtype, engine, gpu))
    findings.add(where, f"does not fit: about {need.gib():.1f} GiB of model states per GPU, more than "
                        f"{memory.HEADROOM:.0%} of {gpu / memory.GIB:.0f} GiB. Alternatives: {options}")


def _size(n: int) -> str:
    return f"{n / memory.GIB:.1f} GiB" if n >= memory.GIB / 10 else f"{n / 2**20:.1f} MiB"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def _exists(model: str) -> bool:
    from facial_r1.checkpoints import _looks_like_path

    return Path(model).exists() or not _looks_like_path(model)
