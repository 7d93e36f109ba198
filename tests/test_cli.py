import json
import subprocess
import sys

from facial_r1.cli import main


def test_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for cmd in ("data", "model", "sft", "grpo", "eval"):
        assert cmd in out


def test_validate_summary_and_exit_codes(synfacs_small, tmp_path, capsys):
    assert main(["data", "validate", str(synfacs_small / "train.jsonl"), "--image-folders", str(synfacs_small)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 48 and summary["errors"] == 0
    assert summary["with_description"] == 24 and summary["without_description"] == 24
    assert sum(summary["labels"].values()) == 48 and summary["per_dataset"] == {"synfacs": 48}
    bad = tmp_path / "bad.jsonl"
    bad.write_text((synfacs_small / "train.jsonl").read_text().splitlines()[0] + "\n{oops\n")
    assert main(["data", "validate", str(bad), "--image-folders", str(synfacs_small)]) == 1
    assert "bad.jsonl:2: invalid JSON" in capsys.readouterr().err


def test_error_is_one_line_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "facial_r1.cli", "sft", "--config", str(tmp_path / "none.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "none.yaml: config file not found" in r.stderr and "Traceback" not in r.stderr


def test_synth_faces_cli(tmp_path, capsys):
    assert main(["data", "synth-faces", "--out", str(tmp_path), "--n", "10", "--test-fraction", "0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["train"] == 8
