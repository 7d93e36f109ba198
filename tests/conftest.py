import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Under pytest-xdist (`make test` runs two workers, one per core), each worker's torchrun and
# accelerate launches rendezvous on a port of their own (torchrun reads PET_MASTER_PORT), so two
# 2-process tests on two workers never meet on the default 29500.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and _worker[2:].isdigit():
    os.environ.setdefault("PET_MASTER_PORT", str(29500 + 17 * (1 + int(_worker[2:]))))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A freshly built tiny Qwen2.5-VL (random weights, local tokenizer)."""
    from facial_r1.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def synfacs_small(tmp_path_factory):
    """60 SynFACS faces: 48 train (half with reasoning), 12 test."""
    from facial_r1.data.synfacs import synth_faces

    out = tmp_path_factory.mktemp("synfacs")
    synth_faces(out, 60, seed=1, test_fraction=0.2, reasoning_fraction=0.5)
    return out


@pytest.fixture(scope="session")
def guided_model(tiny_model, synfacs_small, tmp_path_factory):
    """A trained fixture for synthesis: the tiny model after 150 SFT steps on synfacs_small's 24
    seed faces, all shown with the guided prompt, so it writes their reasoning back when given
    their AUs and emotion. Its synthesis on the 48 train faces keeps about half (measured: 24),
    so the kept-row paths (resume, dedup, merging shares) run; a random model keeps none."""
    from facial_r1 import sft

    return sft.main("configs/sft/tiny-cpu.yaml", {
        "model": str(tiny_model), "data_paths": [str(synfacs_small / "train.jsonl")],
        "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path_factory.mktemp("guided") / "model"),
        "miniature": {"vision_warmup_steps": 0, "instruct_warmup_steps": 0, "guided_fraction": 1.0}, "max_steps": 150,
        "save_strategy": "no", "logging_steps": 50})


@pytest.fixture(scope="session")
def landmarks_server():
    """`facial-r1 serve --backend landmarks` on a free loopback port; yields its URL."""
    from facial_r1.serve import subprocess_server

    with subprocess_server("--backend", "landmarks") as url:
        yield url
