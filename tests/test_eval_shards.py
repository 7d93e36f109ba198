import json
import os
import subprocess
import sys


def test_eval_sharded_over_two_processes_matches_one(tiny_model, synfacs_small, tmp_path):
    # what `accelerate launch` does on several GPUs, here as two CPU processes under torchrun
    args = ["-m", "facial_r1.cli", "eval", "--model", str(tiny_model), "--data", str(synfacs_small / "test.jsonl"),
            "--image-folders", str(synfacs_small), "--protocol", "synfacs", "--max-new-tokens", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=300)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-1500:]
    read = lambda d: [json.loads(x) for x in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]  # noqa: E731
    assert read("one") == read("two") and len(read("two")) == 12  # same greedy outputs, same order
    assert json.loads((tmp_path / "two" / "metrics.json").read_text()) == \
        json.loads((tmp_path / "one" / "metrics.json").read_text())
