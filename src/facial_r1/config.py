"""Stage configs: a stage's YAML file plus its overrides, resolved once into one `StageConfig`.

A stage config is one flat YAML mapping. Keys that the stage's small project dataclass declares
(`SFTRun`, `GRPORun`, both over `StageRun`) go there; every other key must be a field of TRL's
config class (SFTConfig, GRPOConfig), so every TRL/transformers option is usable. Unknown keys
are errors. The resolved mapping (`StageConfig.values`) is what the preflight checks, what the
pipeline writes into a stage's spec, what the stage trains with and what the report reads.

YAML is read with YAML 1.2 booleans and numbers: only `true`/`false` are booleans, so
`save_strategy: no` is the string "no", and `2e-5` is a number (PyYAML's YAML 1.1 reads it as
the string "2e-5", and the run fails when the optimizer is built: LlamaFactory issue 4014, TRL
pull request 1450), in a file, on the command line (`--save_strategy no`) and inside a mapping
(`--grpo '{learning_rate: 5e-05}'`). An override is then read as the type of its field
(`--bf16 no` is False); a number field given text is an error that names the file or override.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from facial_r1.errors import FacialR1Error

log = logging.getLogger(__name__)


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans (YAML 1.1 also reads yes/no/on/off as booleans)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
# YAML 1.2's floats with an exponent and no dot (1e-4, 5E+3, -2e-05); YAML 1.1 wants 1.0e-4
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                    list("-+0123456789."))


def load_yaml(text: str):
    """YAML with YAML 1.2 booleans and exponent floats.

    >>> load_yaml("save_strategy: no\\nbf16: false\\nlearning_rate: 2e-5")
    {'save_strategy': 'no', 'bf16': False, 'learning_rate': 2e-05}
    """
    return yaml.load(text, Loader=_Yaml12Loader)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FacialR1Error(f"{path}: config file not found")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FacialR1Error(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise FacialR1Error(f"{path}: a config must be a mapping of keys to values")
    return data


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
        try:
            out[key.replace("-", "_")] = load_yaml(value)
        except yaml.YAMLError as e:
            raise FacialR1Error(f"override --{key} {value}: not a YAML value ({e})") from None
        i += 1
    return out


_WORD_BOOLS = {"yes": True, "on": True, "y": True, "true": True, "no": False, "off": False, "n": False, "false": False}


def as_field_type(value, annotation):
    """An override's value read as the type of its field: "no"/"yes"/"on"/"off" for a boolean
    field, an integer for a float field. Anything else is left as YAML read it.

    >>> as_field_type("no", bool), as_field_type("no", str | None), as_field_type(3, float)
    (False, 'no', 3.0)
    """
    kinds = _types(annotation)
    if bool in kinds and str not in kinds and isinstance(value, str) and value.lower() in _WORD_BOOLS:
        return _WORD_BOOLS[value.lower()]
    if float in kinds and int not in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _types(annotation) -> set:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_types(a) for a in typing.get_args(annotation)))
    return {origin or annotation}


@dataclass
class StageRun:
    """The options every training stage shares: model loading, data mixture, wall-time guard."""

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
    max_train_minutes: float | None = None  # stop after this wall time (a guard, not a budget)
    # Options for the embedded tiny model only (miniature.Miniature fields): warm-starts and
    # guided rows that stand in for what a real VLM brings from pretraining. Real configs leave it unset.
    miniature: dict | None = None


@dataclass
class StageConfig:
    """One training stage's resolved config: every key of its file and overrides, by value."""

    kind: str  # "sft" | "grpo"
    values: dict
    project_cls: type = field(repr=False)
    trl_cls: type = field(repr=False)
    source: str = "config"  # where the values came from, for messages
    file_values: dict | None = field(default=None, repr=False)  # to name a bad override in errors
    origin: str = "override --{key}"

    def build(self, processes: int | None = None):
        """(project dataclass, TRL config). Raises FacialR1Error naming the file or the
        override that makes it invalid. `processes`: check it as the stage will run, on that many
        processes (TRL's GRPO batch rules depend on them; this process counts as one)."""
        try:
            return self._build(self._as_run_on(self.values, processes))
        except FacialR1Error as e:
            if self.file_values is None:
                raise FacialR1Error(f"{self.source}: {e}") from None
            self._blame(processes)
            raise FacialR1Error(f"{self.source}: {e}") from None

    def _as_run_on(self, values: dict, processes: int | None) -> dict:
        """GRPO's generation batch as `processes` processes would compute it (TRL's rule)."""
        if not processes or processes == 1 or self.kind != "grpo" or {"generation_batch_size",
                                                                       "steps_per_generation"} & set(values):
            return values
        get = {**{k: self.get(k) for k in ("per_device_train_batch_size", "gradient_accumulation_steps")}, **values}
        return {**values, "generation_batch_size": get["per_device_train_batch_size"] * processes
                * get["gradient_accumulation_steps"]}

    def project(self):
        """facial-r1's own options alone (a plain dataclass: it builds whatever TRL would say)."""
        own = {f.name for f in dataclasses.fields(self.project_cls)}
        return self.project_cls(**{k: v for k, v in self.values.items() if k in own})

    def _build(self, values: dict):
        own = {f.name for f in dataclasses.fields(self.project_cls)}
        hints = _field_hints(self.project_cls, self.trl_cls)
        for key, value in values.items():
            kinds = _types(hints.get(key))
            if isinstance(value, str) and kinds & {int, float} and str not in kinds:
                raise FacialR1Error(f"{key} must be a number, got {value!r}")
        project = self.project_cls(**{k: v for k, v in values.items() if k in own})
        try:
            args = self.trl_cls(**{k: v for k, v in values.items() if k not in own})
        except (TypeError, ValueError) as e:
            raise FacialR1Error(str(e)) from None
        return project, args

    def _blame(self, processes: int | None) -> None:
        """The override that makes the config invalid: the one without which it builds."""
        for key, value in self.values.items():
            if key in self.file_values and self.file_values[key] == value:
                continue  # the file's own value
            without = {k: v for k, v in self.values.items() if k != key}
            if key in self.file_values:
                without[key] = self.file_values[key]
            try:
                self._build(self._as_run_on(without, processes))
            except FacialR1Error:
                continue
            try:
                self._build(self._as_run_on(self.values, processes))
            except FacialR1Error as e:
                raise FacialR1Error(f"{self.origin.format(key=key)} {value!r}: {e}") from None

    def get(self, key: str, default=None):
        """A key's value as the stage will see it (its dataclass default when no file sets it)."""
        if key in self.values:
            return self.values[key]
        for cls in (self.project_cls, self.trl_cls):
            for f in dataclasses.fields(cls):
                if f.name == key:
                    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        return default


def resolve(path: str | Path | None, overrides: dict, project_cls, trl_cls, kind: str,
            origin: str = "override --{key}", validate: bool = True) -> StageConfig:
    """The stage's file with `overrides` on top, each override read as the type of its field.
    `origin` names an override in errors ("override --{key}", "pipeline key sft.{key}").
    Unknown keys are errors at once; with `validate`, so is an invalid TRL config (else the
    preflight reports it with the others)."""
    base = read_yaml(path) if path else {}
    fields = {f.name for cls in (project_cls, trl_cls) for f in dataclasses.fields(cls) if f.init}
    hints = _field_hints(project_cls, trl_cls)
    unknown_file = sorted(k for k in base if k not in fields)
    if unknown_file:
        raise FacialR1Error(f"{path}: unknown key(s) {unknown_file} (not facial-r1 {project_cls.__name__} "
                            f"fields nor {trl_cls.__name__} options)")
    unknown = sorted(k for k in overrides if k not in fields)
    if unknown:
        raise FacialR1Error(f"{', '.join(origin.format(key=k) for k in unknown)}: unknown key(s) {unknown} (not "
                            f"facial-r1 {project_cls.__name__} fields nor {trl_cls.__name__} options)")
    typed = {k: as_field_type(v, hints.get(k)) for k, v in overrides.items()}
    stage = StageConfig(kind, merged(base, typed), project_cls, trl_cls, str(path or "config"), base, origin)
    if validate:
        stage.build()
    return stage


@functools.cache
def _field_hints(project_cls, trl_cls) -> dict:
    """Every key's annotation: TRL's config class, then facial-r1's (which wins on a shared name)."""
    return {**typing.get_type_hints(trl_cls), **typing.get_type_hints(project_cls)}


def merged(base: dict, overrides: dict) -> dict:
    """`overrides` on `base`; a mapping over a mapping (`miniature`, `lora`) is merged one level.

    >>> merged({"lora": {"r": 64, "lora_alpha": 128}, "seed": 0}, {"lora": {"r": 8}})
    {'lora': {'r': 8, 'lora_alpha': 128}, 'seed': 0}
    """
    out = dict(base)
    for key, value in overrides.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def log_resolved(stage: StageConfig) -> None:
    log.info("config %s (%s)\n%s", stage.source, stage.kind, yaml.safe_dump(stage.values, sort_keys=False))
