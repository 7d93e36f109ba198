"""YAML run configs over TRL's own config dataclasses.

A stage config is one flat YAML mapping. Keys that the stage's small project dataclass
declares go there; every other key must be a field of TRL's config class (SFTConfig,
GRPOConfig), so every TRL/transformers option is usable. Unknown keys are errors.
CLI overrides (`--key value`) are parsed as YAML scalars and win over the file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from facial_r1.errors import FacialR1Error

log = logging.getLogger(__name__)


@dataclass
class StageRun:
    """The options every training stage shares: model loading, data mixture, wall-time budget."""

    model: str = "runs/tiny/model"
    data_paths: list = field(default_factory=lambda: ["runs/tiny/synfacs/train.jsonl"])
    image_folders: list = field(default_factory=lambda: ["runs/tiny/synfacs"])
    data_sampling: list | None = None  # per file: all | first:N | random:N
    dtype: str = "float32"
    attn_implementation: str | None = None  # None: flash_attention_2 when installed, else sdpa
    min_pixels: int | None = None
    max_pixels: int | None = None
    lora: dict | None = None  # peft.LoraConfig fields; None = full fine-tuning
    freeze_vision: bool = False
    max_train_minutes: float | None = None  # stop after this wall time (CPU budgets)

    def load_model(self, args=None):
        """(model, processor); given the stage's TRL config, the weights' dtype for training
        (`training_dtype`), which may turn on its autocast."""
        from facial_r1 import models

        dtype = self.dtype
        if args is not None:
            deepspeed = bool(args.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
            dtype, autocast = training_dtype(self.dtype, deepspeed, bool(self.lora))
            if autocast:
                log.info("dtype %s without DeepSpeed: float32 weights (the optimizer's master copy) with %s "
                         "autocast", self.dtype, autocast)
                setattr(args, autocast, True)
                args.mixed_precision = autocast  # TrainingArguments derived it from the flags already
        return models.load(self.model, dtype, self.attn_implementation, self.min_pixels, self.max_pixels,
                           self.lora, self.freeze_vision)


def training_dtype(dtype: str, deepspeed: bool, lora: bool) -> tuple[str, str | None]:
    """(dtype to load the weights in, autocast flag to turn on or None) for a training stage.

    Weights trained in bfloat16 lose small updates: at lr 1e-6 most round away. DeepSpeed keeps
    float32 master weights in its optimizer, so there the weights may load in bf16. Without it,
    full fine-tuning loads float32 and computes under autocast (TRL's `bf16`/`fp16`). LoRA trains
    float32 adapters (PEFT casts them) on frozen base weights, which may stay in bf16.

    >>> training_dtype("bfloat16", deepspeed=False, lora=False)
    ('float32', 'bf16')
    """
    if dtype not in ("bfloat16", "float16") or deepspeed or lora:
        return dtype, None
    return "float32", "bf16" if dtype == "bfloat16" else "fp16"


def parse_overrides(args: list[str]) -> dict:
    """['--learning_rate', '1e-4', '--max_steps=5'] -> {'learning_rate': 0.0001, 'max_steps': 5}."""
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise FacialR1Error(f"override {arg!r} must look like --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                value = "true"  # a bare flag
            else:
                i += 1
                value = args[i]
        out[key.replace("-", "_")] = _scalar(value)
        i += 1
    return out


def _scalar(text: str):
    """YAML scalar, but '1e-4' is a float (YAML 1.1 would keep it a string)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FacialR1Error(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FacialR1Error(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise FacialR1Error(f"{path}: a config must be a mapping of keys to values")
    return data


def load_stage_config(path: str | Path | None, overrides: dict, project_cls, trl_cls):
    """Split a YAML config (+ overrides) into (project dataclass, TRL config)."""
    raw = {**(read_yaml(path) if path else {}), **overrides}
    own = {f.name for f in dataclasses.fields(project_cls)}
    trl_fields = {f.name for f in dataclasses.fields(trl_cls) if f.init}
    unknown = sorted(k for k in raw if k not in own and k not in trl_fields)
    if unknown:
        raise FacialR1Error(f"{path or 'config'}: unknown key(s) {unknown} (not facial-r1 {project_cls.__name__} "
                            f"fields nor {trl_cls.__name__} options)")
    project = project_cls(**{k: v for k, v in raw.items() if k in own})
    try:
        trl_args = trl_cls(**{k: v for k, v in raw.items() if k not in own})
    except (TypeError, ValueError) as e:
        raise FacialR1Error(f"{path or 'config'}: {e}") from None
    log.info("config %s\n%s", path or "(overrides only)", yaml.safe_dump(
        {"facial_r1": dataclasses.asdict(project),
         trl_cls.__name__: {k: raw[k] for k in raw if k not in own}}, sort_keys=False))
    return project, trl_args
