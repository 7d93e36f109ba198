import json

import pytest

from facial_r1 import pipeline
from facial_r1.errors import FacialR1Error


def test_report_table_and_plot(tmp_path):
    rows = [{"stage": "SFT (seed set)", "au_f1": 0.5, "accuracy": 0.25, "rouge_l": 0.4, "rege": 32.5,
             "format_rate": 1.0},
            {"stage": "+ GRPO", "au_f1": None, "accuracy": 0.3, "rouge_l": None, "rege": None, "format_rate": 0.9}]
    table = pipeline.report_table(rows)
    assert "| SFT (seed set) | 50.0 | 25.0 | 40.0 | 32.5 | 100.0 |" in table
    assert "| + GRPO | - | 30.0 | - | - | 90.0 |" in table
    pipeline.write_report(tmp_path, rows, {"sft": 10.0}, 12.0)
    assert (tmp_path / "metrics.png").stat().st_size > 1000
    assert "| **total** | **12** |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("overrides, message", [
    ({"roundz": 2}, r"unknown key\(s\) \['roundz'\]"),  # a typo at the top level
    ({"synthesis": {"atempts": 2}}, r"synthesis: .*unexpected keyword argument 'atempts'"),  # caught before SFT
    ({"synthesis": {"qc": {"au_f1": 0.5}}}, r"synthesis: .*unexpected keyword argument 'au_f1'"),
    ({"synthesis": {"engine": "sglang"}}, "unknown engine 'sglang'"),
])
def test_bad_settings_fail_before_any_stage(tmp_path, overrides, message):
    with pytest.raises(FacialR1Error, match=message):
        pipeline.main("configs/pipeline/tiny-cpu.yaml", {"run_dir": str(tmp_path / "run"), **overrides})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("path", ["configs/pipeline/tiny-cpu.yaml", "configs/pipeline/qwen2.5-vl-7b.yaml"])
def test_shipped_pipeline_configs_parse(path):
    p, settings = pipeline.read_pipeline(path, {})
    assert p.rounds >= 1 and settings.attempts >= 1 and settings.engine in ("auto", "hf")


def test_pipeline_runs_end_to_end_at_reduced_size(tmp_path):
    report = pipeline.main("configs/pipeline/tiny-cpu.yaml", {
        "run_dir": str(tmp_path / "run"),
        "synfacs": {"n": 80, "seed": 3, "test_fraction": 0.25, "reasoning_fraction": 0.4},
        "sft": {"max_steps": 3, "vision_warmup_seconds": 2, "save_strategy": "no"},
        "grpo": {"max_steps": 2, "max_completion_length": 24, "save_strategy": "no"},
        "round_sft": {"max_steps": 2, "save_strategy": "no"},
        "round_grpo": {"max_steps": 1, "max_completion_length": 24, "save_strategy": "no"},
        "synthesis": {"attempts": 1, "max_new_tokens": 32, "qc": {"au_f1_min": 0.0}},
        "eval_max_new_tokens": 32,
    })
    text = report.read_text()
    assert "| SFT (seed set) |" in text and "| + GRPO (labelled pool) |" in text
    assert "round 1" in text
    run = report.parent
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["rows"][0]["format_rate"] is not None
    assert (run / "metrics.png").is_file() and (run / "round1" / "synth.report.json").is_file()
    assert {"data", "model", "sft", "grpo", "round1 synthesize"} <= set(metrics["timings"])
