import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from trl import GRPOConfig, SFTConfig

from facial_r1 import training
from facial_r1.config import merged, parse_overrides, read_yaml, resolve
from facial_r1.errors import FacialR1Error
from facial_r1.grpo import GRPORun
from facial_r1.memory import training_dtype
from facial_r1.sft import SFTRun


@pytest.mark.parametrize("args, expected", [
    (["--learning_rate", "1e-4"], {"learning_rate": 1e-4}),
    (["--max_steps=5", "--bf16"], {"max_steps": 5, "bf16": True}),     # = form, bare flag
    (["--data_paths", "[a.jsonl, b.jsonl]"], {"data_paths": ["a.jsonl", "b.jsonl"]}),  # YAML list
    (["--lora", "{r: 8}"], {"lora": {"r": 8}}),
    (["--output-dir", "x"], {"output_dir": "x"}),                      # dashes -> underscores
    (["--save_strategy", "no"], {"save_strategy": "no"}),               # YAML 1.2: "no" is a word, not False
    (["--bf16", "false"], {"bf16": False}),
    # an exponent float inside a mapping (the pipeline's --grpo): YAML 1.1 left it a string
    (["--grpo", "{learning_rate: 5e-05, beta: 4E-2}"], {"grpo": {"learning_rate": 5e-05, "beta": 0.04}}),
    (["--run_name", "inf"], {"run_name": "inf"}),                          # a word stays a word
])
def test_parse_overrides(args, expected):
    assert parse_overrides(args) == expected


def _stage(tmp_path, text, overrides, cls=(SFTRun, SFTConfig), kind="sft"):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return resolve(f, overrides, *cls, kind)


@pytest.mark.parametrize("text, overrides, key, expected", [
    # an override is read as the type of its field
    ("output_dir: o\nuse_cpu: true\n", {"save_strategy": "no"}, "save_strategy", "no"),
    ("output_dir: o\nuse_cpu: true\n", {"bf16": "no"}, "bf16", False),       # a bool field takes yes/no
    ("output_dir: o\nuse_cpu: true\n", {"bf16": "on"}, "bf16", True),
    ("output_dir: o\nuse_cpu: true\n", {"learning_rate": 1}, "learning_rate", 1.0),  # an int for a float field
    # in a file too, `no` is the string (PyYAML's YAML 1.1 read it as False)
    ("output_dir: o\nuse_cpu: true\nsave_strategy: no\n", {}, "save_strategy", "no"),
    # mappings merge one level: the file's miniature keys stay
    ("output_dir: o\nuse_cpu: true\nminiature: {vision_warmup_steps: 5, guided_fraction: 0.25}\n",
     {"miniature": {"vision_warmup_steps": 0}}, "miniature", {"vision_warmup_steps": 0, "guided_fraction": 0.25}),
])
def test_overrides_are_read_as_their_fields_type(tmp_path, text, overrides, key, expected):
    stage = _stage(tmp_path, text, overrides)
    assert stage.values[key] == expected
    run, args = stage.build()
    built = getattr(run, key) if hasattr(run, key) else getattr(args, key)
    assert getattr(built, "value", built) == expected  # an enum field holds its value


def test_an_invalid_override_is_named_not_the_file(tmp_path):
    with pytest.raises(FacialR1Error, match=r"^override --save_strategy 'never': .*never"):
        _stage(tmp_path, "output_dir: o\nuse_cpu: true\n", {"save_strategy": "never"})
    with pytest.raises(FacialR1Error, match=r"c.yaml: .*never"):  # the file's own error names the file
        _stage(tmp_path, "output_dir: o\nuse_cpu: true\nsave_strategy: never\n", {})
    with pytest.raises(FacialR1Error, match=r"pipeline key grpo.num_generation: unknown key"):
        resolve(None, {"num_generation": 4}, GRPORun, GRPOConfig, "grpo", origin="pipeline key grpo.{key}")


def test_split_between_project_and_trl(tmp_path):
    stage = _stage(tmp_path, "model: m\nlearning_rate: 0.01\noutput_dir: out\nminiature: {vision_warmup_steps: 5}\n",
                   {"max_steps": 3, "use_cpu": True})
    run, args = stage.build()
    assert (run.model, run.miniature) == ("m", {"vision_warmup_steps": 5})
    assert (args.learning_rate, args.max_steps, args.output_dir) == (0.01, 3, "out")
    assert stage.get("per_device_train_batch_size") == 8 and stage.get("max_steps") == 3  # defaults too


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(FacialR1Error, match=r"c.yaml: unknown key\(s\) \['learning_rte'\]"):
        _stage(tmp_path, "model: m\nlearning_rte: 0.01\n", {})
    with pytest.raises(FacialR1Error, match=r"override --learning_rte: unknown key"):
        _stage(tmp_path, "model: m\n", {"learning_rte": 0.01})


def test_yaml_12_booleans(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("a: no\nb: off\nc: yes\nd: true\ne: False\n")
    assert read_yaml(f) == {"a": "no", "b": "off", "c": "yes", "d": True, "e": False}
    assert merged({"x": {"a": 1}}, {"x": None}) == {"x": None}  # None replaces a mapping


@pytest.mark.parametrize("dtype, lora, zero, gpu_mib, weights, autocast", [
    # one GPU, full fine-tuning: float32 master weights under bf16 autocast, where they fit
    ("bfloat16", None, None, 1024, {torch.float32}, "bf16"),
    ("float16", None, None, 1024, {torch.float32}, "fp16"),
    # a GPU too small for the float32 states (16 B/param: 15.7 MiB) but not for bf16 (7.9 MiB): bf16 weights
    ("bfloat16", None, None, 12, {torch.bfloat16}, None),
    ("bfloat16", None, 3, 1024, {torch.bfloat16}, None),  # DeepSpeed holds the float32 master weights
    ("bfloat16", {"r": 4}, None, 1024, {torch.bfloat16, torch.float32}, None),  # frozen bf16 base, fp32 adapters
    ("float32", None, None, None, {torch.float32}, None),  # the tiny CPU default, no GPU
])
def test_the_training_dtype_loads_these_weights(tiny_model, monkeypatch, dtype, lora, zero, gpu_mib, weights,
                                                autocast):
    from facial_r1 import launch, memory

    monkeypatch.setattr(memory, "gpu_bytes", lambda: gpu_mib and gpu_mib * 2**20)
    monkeypatch.setattr(memory, "current_engine", lambda args=None: memory.Engine(1, 1, zero))
    given = {"model": str(tiny_model), "dtype": dtype, "use_cpu": True, "output_dir": "unused", "report_to": "none"}
    run, args = resolve(None, {**given, **({"lora": lora} if lora else {})}, SFTRun, SFTConfig, "sft").build()
    model, _ = training.load_model(run, args)
    got = {p.dtype for p in model.parameters()}
    assert got == weights
    if lora:
        assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    assert (args.mixed_precision if autocast else None) == autocast
    assert training_dtype(dtype, zero is not None, bool(lora), gpu_mib != 12) == (
        "float32" if autocast else dtype, autocast)


# Lines users write in training configs; YAML 1.1 (PyYAML's default) reads each as a string and
# the run fails when the optimizer is built ("'<=' not supported between instances of 'float' and
# 'str'"). Sources: hiyouga/LlamaFactory issue 4014 ("learning rate ... 2e-5" in a config file),
# huggingface/trl pull request 1450 ("1e-4 is interpreted as an str"), Noble-Lab/casanovo issue 64
# ("learning rate `5e-4`").
@pytest.mark.parametrize("line, key, expected", [
    ("learning_rate: 2e-5", "learning_rate", 2e-5),
    ("learning_rate: 1e-4", "learning_rate", 1e-4),
    ("learning_rate: 5e-4", "learning_rate", 5e-4),
    ("weight_decay: 1E-2", "weight_decay", 0.01),
    ("learning_rate: 1.0e-5", "learning_rate", 1e-5),   # the YAML 1.1 spelling still reads
    ("max_grad_norm: +1e0", "max_grad_norm", 1.0),
])
def test_exponent_floats_in_a_config_file_are_numbers(tmp_path, line, key, expected):
    stage = _stage(tmp_path, f"output_dir: o\nuse_cpu: true\n{line}\n", {})
    _, args = stage.build()
    assert getattr(args, key) == expected and isinstance(getattr(args, key), float)


@pytest.mark.parametrize("text, overrides, message", [
    ("output_dir: o\nuse_cpu: true\nlearning_rate: fast\n", {}, r"c.yaml: learning_rate must be a number, got 'fast'"),
    ("output_dir: o\nuse_cpu: true\n", {"learning_rate": "fast"},
     r"override --learning_rate 'fast': learning_rate must be a number"),
    ("output_dir: o\nuse_cpu: true\n", {"max_steps": "ten"}, r"override --max_steps 'ten': max_steps must be a number"),
])
def test_text_for_a_number_is_named_before_training(tmp_path, text, overrides, message):
    with pytest.raises(FacialR1Error, match=message):
        _stage(tmp_path, text, overrides)


@given(st.floats(min_value=1e-12, max_value=1e12, allow_nan=False), st.sampled_from(["e", "E"]))
def test_any_exponent_spelling_reads_back_as_its_float(x, e):
    mantissa, exponent = f"{x:.6e}".split("e")
    for text in (f"{mantissa}{e}{exponent}", f"{mantissa.rstrip('0').rstrip('.')}{e}{int(exponent)}"):
        assert parse_overrides(["--grpo", f"{{lr: {text}}}"]) == {"grpo": {"lr": float(text)}}
