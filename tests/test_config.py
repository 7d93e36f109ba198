import pytest
from trl import SFTConfig

from facial_r1.config import load_stage_config, parse_overrides
from facial_r1.errors import FacialR1Error
from facial_r1.sft import SFTRun


@pytest.mark.parametrize("args, expected", [
    (["--learning_rate", "1e-4"], {"learning_rate": 1e-4}),
    (["--max_steps=5", "--bf16"], {"max_steps": 5, "bf16": True}),     # = form, bare flag
    (["--data_paths", "[a.jsonl, b.jsonl]"], {"data_paths": ["a.jsonl", "b.jsonl"]}),  # YAML list
    (["--lora", "{r: 8}"], {"lora": {"r": 8}}),
    (["--output-dir", "x"], {"output_dir": "x"}),                      # dashes -> underscores
])
def test_parse_overrides(args, expected):
    assert parse_overrides(args) == expected


def test_split_between_project_and_trl(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\nlearning_rate: 0.01\noutput_dir: out\nvision_warmup_steps: 5\n")
    run, args = load_stage_config(f, {"max_steps": 3, "use_cpu": True}, SFTRun, SFTConfig)
    assert (run.model, run.vision_warmup_steps) == ("m", 5)
    assert (args.learning_rate, args.max_steps, args.output_dir) == (0.01, 3, "out")


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\nlearning_rte: 0.01\n")
    with pytest.raises(FacialR1Error, match=r"unknown key\(s\) \['learning_rte'\]"):
        load_stage_config(f, {}, SFTRun, SFTConfig)


def test_shipped_configs_parse():
    from pathlib import Path

    root = Path(__file__).parent.parent / "configs" / "sft"
    for path in root.glob("*.yaml"):
        run, args = load_stage_config(path, {"use_cpu": True, "bf16": False, "deepspeed": None}, SFTRun, SFTConfig)
        assert run.model and args.output_dir
