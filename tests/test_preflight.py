"""The preflight: the shipped real configs resolved as their stages will see them, every problem
reported at once before any compute, memory per GPU from DeepSpeed's and accelerate's
estimators, and the launchers read with their own argument parsers."""

import pytest

from facial_r1 import memory, pipeline
from facial_r1.cli import main as cli
from facial_r1.errors import FacialR1Error
from facial_r1.launch import parse_launcher

SEVEN_B = "tests/data/qwen2.5-vl-7b"  # the published config.json of Qwen2.5-VL-7B-Instruct, no weights
CONFIG = "configs/pipeline/qwen2.5-vl-7b.yaml"
ZERO3_2 = "accelerate launch --config_file configs/accelerate/zero3-8gpu.yaml --num_processes 2 --mixed_precision no"
CPU = {"use_cpu": True, "bf16": False}


@pytest.fixture
def fea(synfacs_small, tmp_path):
    """Seed / pool / test files of the pipeline's real-data form."""
    from facial_r1.data.schema import read_jsonl, write_jsonl

    train = read_jsonl(synfacs_small / "train.jsonl")
    write_jsonl(tmp_path / "seed.jsonl", [r for r in train if r["description"]])
    write_jsonl(tmp_path / "pool.jsonl", [r for r in train if not r["description"]])
    return {"seed_data": str(tmp_path / "seed.jsonl"), "pool_data": str(tmp_path / "pool.jsonl"),
            "test_data": str(synfacs_small / "test.jsonl"), "image_folders": [str(synfacs_small)]}


def stand_ins(model, fea, tmp_path, **more):
    """The 7B pipeline with tiny stand-ins: the model, the data, the budgets, the CPU."""
    return {"run_dir": str(tmp_path / "run"), "model": str(model), **fea, "launcher": ZERO3_2, "rounds": 1,
            "sft": {**CPU, "max_steps": 3}, "grpo": {**CPU, "max_steps": 2},
            "round_sft": {**CPU, "max_steps": 2}, "round_grpo": {**CPU, "max_steps": 2}, **more}


def test_the_7b_pipeline_with_tiny_stand_ins_passes(tiny_model, fea, tmp_path):
    assert pipeline.main(CONFIG, stand_ins(tiny_model, fea, tmp_path), check=True) is None
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was written


def test_the_7b_pipeline_as_it_shipped_names_the_data_sampling_mismatch_before_any_stage(tiny_model, fea, tmp_path):
    """The file before this fix: `grpo: {}` kept the GRPO config's 3 sampling rules for the one pool file."""
    old = tmp_path / "old.yaml"
    old.write_text(open(CONFIG).read().replace("grpo: {data_sampling: null}", "grpo: {}")
                   .replace("round_grpo: {data_sampling: null}", "round_grpo: {}"))
    given = stand_ins(tiny_model, fea, tmp_path)
    given["grpo"] = {**CPU, "max_steps": 2}
    with pytest.raises(FacialR1Error) as error:
        pipeline.main(str(old), given)
    text = str(error.value)
    assert "grpo: 3 data_sampling rules for 1 data_paths" in text
    assert "round1 grpo: 3 data_sampling rules for 1 data_paths" in text
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("more, messages", [
    # every problem at once, each naming its stage and key
    ({"sft": {**CPU, "max_steps": 3, "learning_rte": 1e-5}}, ["pipeline key sft.learning_rte: unknown key"]),
    ({"grpo": {**CPU, "max_steps": 2, "num_generations": 3}, "round_grpo": {**CPU, "max_steps": 0}},
     ["grpo: pipeline key grpo.num_generations 3: generation_batch_size (8) must be divisible by num_generations (3)",
      "round1 grpo: max_steps must be a positive integer, got 0"]),
    # the launcher's mixed precision against the stage's
    ({"launcher": ZERO3_2.replace("--mixed_precision no", "--mixed_precision bf16")},
     ["sft: the launcher's accelerate config has mixed_precision bf16, the stage no"]),
    ({"launcher": "accelerate launch --config_file configs/accelerate/nowhere.yaml"},
     ["launcher: accelerate config configs/accelerate/nowhere.yaml not found"]),
    ({"launcher": "srun python"}, ["facial-r1 reads python, inline, accelerate launch and torchrun"]),
    # a real model's stage with the tiny model's scaffolding
    ({"model": SEVEN_B, "sft": {**CPU, "max_steps": 3, "miniature": {"guided_fraction": 0.5}}},
     [f"sft: miniature: {SEVEN_B} is not the embedded tiny model"]),
    ({"seed_data": "nowhere/seed.jsonl"}, ["pipeline: seed_data nowhere/seed.jsonl not found"]),
])
def test_every_problem_is_named_before_any_stage(tiny_model, fea, tmp_path, more, messages):
    with pytest.raises(FacialR1Error) as error:
        pipeline.main(CONFIG, {**stand_ins(tiny_model, fea, tmp_path), **more}, check=True)
    for message in messages:
        assert message in str(error.value)


def test_the_grpo_batch_is_checked_against_the_launchers_processes(tiny_model, fea, tmp_path):
    """per-device 1 x accumulation 4 = 4 completions a process: 2 processes make 8 = num_generations;
    one process (python) would make 4, and TRL would stop the stage after SFT had finished."""
    given = stand_ins(tiny_model, fea, tmp_path)
    assert pipeline.main(CONFIG, given, check=True) is None
    with pytest.raises(FacialR1Error, match=r"grpo: .*generation_batch_size \(4\) must be divisible by "
                                            r"num_generations \(8\)"):
        pipeline.main(CONFIG, {**given, "launcher": "python"}, check=True)


@pytest.mark.parametrize("launcher, gib, fits, words", [
    # one 80 GiB GPU, full fine-tuning: float32 master weights (16 B/param, 124 GiB) do not fit; bf16 (8 B) does
    ("python", 80, True, ["float32 master weights do not fit: bfloat16 weights, 61.8 GiB"]),
    # 40 GiB: nothing fits; the alternatives come with their own estimates
    ("python", 40, False, ["does not fit", "LoRA (lora: {r: 64, lora_alpha: 128}): about",
                           "ZeRO-3 with CPU offload", "ZeRO-3 over 8 GPUs: about 19.4 GiB"]),
    # the paper's set-up: ZeRO-3 over 8 GPUs, DeepSpeed's estimate 19.4 GiB per GPU
    ("accelerate launch --config_file configs/accelerate/zero3-8gpu.yaml", 80, True, ["19.4 GiB", "ZeRO-3 over 8"]),
])
def test_memory_per_gpu_of_the_7b_config(launcher, gib, fits, words, capsys):
    code = cli(["sft", "--check", "--config", "configs/sft/qwen2.5-vl-7b.yaml", "--model", SEVEN_B,
                "--gpu-memory-gib", str(gib), "--use_cpu", "true", "--data_paths", "[tests/data/none.jsonl]"]
               if launcher == "python" else
               ["pipeline", "--check", "--config", CONFIG, "--model", SEVEN_B, "--gpu-memory-gib", str(gib),
                "--launcher", launcher, "--sft", "{use_cpu: true}", "--grpo", "{use_cpu: true}",
                "--round_sft", "{use_cpu: true}", "--round_grpo", "{use_cpu: true}"])
    out = capsys.readouterr()
    text = out.out + out.err
    for word in words:
        assert word in text, text
    assert ("does not fit" in text) == (not fits)
    assert code == 1  # a data file is missing in every row: the check fails, the estimate is still printed


def test_estimates_come_from_deepspeed_and_accelerate():
    params = memory.count_params(SEVEN_B)
    assert params.total == 8_292_166_656  # the released model's parameter count
    from accelerate.commands.estimate import estimate_training_usage
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    plain = memory.estimate(params, "bfloat16", None, memory.Engine(1))
    assert plain.per_gpu == max(estimate_training_usage(4 * params.total, "float32").values())
    zero3 = memory.estimate(params, "bfloat16", None, memory.Engine(8, 1, 3))
    assert zero3.per_gpu == estimate_zero3_model_states_mem_needs(params.total, params.largest_layer, 8, 1,
                                                                   cpu_offload=False, cpu_offload_params=False)[1]
    lora = memory.count_params(SEVEN_B, {"r": 64})
    assert 0 < lora.trainable < params.total / 20 and lora.total == params.total


@pytest.mark.parametrize("text, processes, zero, mixed, problem", [
    ("python", 1, None, None, None),
    ("inline", 1, None, None, None),
    ("accelerate launch --config_file configs/accelerate/zero3-8gpu.yaml", 8, 3, "bf16", None),
    ("accelerate launch --config_file configs/accelerate/zero3-8gpu.yaml --num_processes 2", 2, 3, "bf16", None),
    ("accelerate launch --config_file configs/accelerate/1gpu.yaml", 1, None, "bf16", None),
    ("accelerate launch --use_deepspeed --zero_stage 2 --num_processes 4", 4, 2, None, None),
    ("torchrun --nproc_per_node 2", 2, None, None, None),
    ("torchrun --nnodes 2 --nproc_per_node 8", 16, None, None, None),
    ("accelerate launch --config_file nowhere.yaml", 1, None, None, "nowhere.yaml not found"),
])
def test_launchers_are_read_with_their_own_parsers(text, processes, zero, mixed, problem):
    launch = parse_launcher(text)
    assert (launch.num_processes, launch.engine.zero_stage, launch.mixed_precision) == (processes, zero, mixed)
    assert any(problem in p for p in launch.problems) if problem else not launch.problems


@pytest.mark.parametrize("seed, expected", [
    (None, {"sft": 0, "grpo": 42, "round1 sft": 0, "round1 grpo": 42}),  # each stage config keeps its own
    (3, {"sft": 3, "grpo": 3, "round1 sft": 3, "round1 grpo": 3}),       # unless the pipeline is given one
])
def test_the_7b_configs_keep_their_own_seed_unless_the_pipeline_gives_one(tiny_model, fea, tmp_path, seed, expected):
    given = stand_ins(tiny_model, fea, tmp_path) | ({"seed": seed} if seed is not None else {})
    the_plan, findings = pipeline.plan(CONFIG, given)
    assert not findings.errors
    assert {name: planned.stage.values["seed"] for name, planned in the_plan.stages.items()} == expected
