import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from facial_r1 import grpo
from facial_r1.config import load_stage_config, read_yaml
from facial_r1.errors import FacialR1Error
from trl import GRPOConfig


def test_the_private_trl_methods_we_wrap_are_still_there():
    """TimedGRPOTrainer overrides private GRPOTrainer methods; a TRL that renames or reshapes one
    fails here, by name, instead of silently losing the phase timers or the token credit."""
    import inspect

    import trl
    from trl import GRPOTrainer

    ours = {n for n, f in vars(grpo.TimedGRPOTrainer).items() if callable(f) and hasattr(GRPOTrainer, n)}
    assert ours == set(grpo.TimedGRPOTrainer.TRL_PRIVATE)  # every override is listed
    for name in grpo.TimedGRPOTrainer.TRL_PRIVATE:
        theirs = getattr(GRPOTrainer, name, None)
        assert theirs is not None, f"trl {trl.__version__}: GRPOTrainer.{name} is gone"
        assert inspect.signature(theirs).parameters.keys() == \
            inspect.signature(getattr(grpo.TimedGRPOTrainer, name)).parameters.keys(), name


def test_tiny_config_parses():
    # the embedded default: 4 prompts x 8 generations, short completions, a KL anchor, Dr. GRPO loss
    run, args = load_stage_config("configs/grpo/tiny-cpu.yaml", {}, grpo.GRPORun, GRPOConfig)
    assert run.rewards == ["au_f1", "accuracy", "format"] and args.reward_weights == [1.0, 1.0, 1.0]
    assert (args.num_generations, args.max_completion_length, args.beta, args.loss_type) == (8, 96, 0.04, "dr_grpo")
    assert not args.bf16 and not args.activation_checkpointing  # set in the file, not TRL's defaults


# run_scripts/grpo_emotion.sh of the released Facial-R1 (with the defaults of the TRL it ran on)
RELEASED_GRPO = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 4, "max_completion_length": 2048,
                 "beta": 0.04, "num_train_epochs": 1, "seed": 42, "data_seed": 42, "bf16": True,
                 "activation_checkpointing": True, "learning_rate": 1e-6, "lr_scheduler_type": "linear",
                 "loss_type": "grpo", "num_generations": 8, "use_vllm": False}


def test_7b_config_holds_the_released_settings_and_documents_each_difference():
    path = "configs/grpo/qwen2.5-vl-7b.yaml"
    # TRL checks the generation batch against the number of processes: give it the 8 GPUs' value;
    # bf16 cannot be validated on this CPU (checked in the file instead)
    overrides = {"generation_batch_size": 1 * 8 * 4, "use_cpu": True, "bf16": False}
    run, args = load_stage_config(path, overrides, grpo.GRPORun, GRPOConfig)
    raw = read_yaml(path)
    for key, value in RELEASED_GRPO.items():
        assert raw[key] == value, key
        if key != "bf16":
            assert getattr(args, key) == value, key
    assert args.loss_type == "grpo" and args.lr_scheduler_type.value == "linear"
    header = "\n".join(line for line in open(path).read().splitlines() if line.startswith("#"))
    # the keys that differ from the released script are each named, with the reason, in the header
    assert run.rewards == ["au_f1", "accuracy", "format"] and "au_f1_signed" in header
    assert raw["save_strategy"] == "steps" and "save_strategy steps" in header
    assert raw["min_pixels"] and "min/max_pixels" in header
    assert "Never run here" in header


@pytest.mark.parametrize("overrides, message", [
    ({"rewards": ["au_f1", "smile_bonus"]}, r"unknown reward\(s\) \['smile_bonus'\]"),
    ({"reward_weights": [1.0, 2.0]}, "2 reward_weights for 3 reward_funcs"),
    ({"num_generatons": 4}, r"unknown key\(s\) \['num_generatons'\]"),
])
def test_bad_config_is_an_error_before_training(overrides, message, synfacs_small, tmp_path):
    with pytest.raises(FacialR1Error, match=message):
        grpo.main("configs/grpo/tiny-cpu.yaml", {"model": "no/such/model/here", "output_dir": str(tmp_path),
                                                 "data_paths": [str(synfacs_small / "train.jsonl")],
                                                 "image_folders": [str(synfacs_small)], **overrides})


def test_dataset_without_au_labels_is_refused_for_the_au_reward(synfacs_small, tmp_path):
    rows = [json.loads(line) for line in (synfacs_small / "train.jsonl").read_text().splitlines()]
    emotion_only = tmp_path / "fer_like.jsonl"
    emotion_only.write_text("".join(json.dumps({**r, "AUs": None}) + "\n" for r in rows))
    with pytest.raises(FacialR1Error, match=r"fer_like.jsonl: dataset lacks column\(s\) \['AUs'\]"):
        grpo.main("configs/grpo/tiny-cpu.yaml", {"model": "no/such/model/here", "output_dir": str(tmp_path),
                                                 "data_paths": [str(emotion_only)],
                                                 "image_folders": [str(synfacs_small)]})


def test_dataset_rows_keep_missing_labels_as_none(synfacs_small):
    from facial_r1.data.schema import read_samples_with_images

    samples, _ = read_samples_with_images(synfacs_small / "train.jsonl", [synfacs_small])
    samples[0] = {**samples[0], "AUs": None}
    samples[1] = {**samples[1], "labels": []}
    ds = grpo.grpo_dataset(samples[:3], prompt_style="question")
    assert ds.column_names == ["prompt", "image", "AUs", "labels", "id"]
    assert ds[0]["AUs"] is None and ds[1]["labels"] is None and ds[2]["AUs"] == samples[2]["AUs"]
    assert ds[0]["prompt"][0]["content"][0] == {"type": "image", "text": None}
    assert ds[0]["image"].size == (112, 112)


def _tiny_sft(tiny_model, synfacs_small, tmp_path):
    from facial_r1 import sft

    return sft.main("configs/sft/tiny-cpu.yaml", {
        "model": str(tiny_model), "data_paths": [str(synfacs_small / "train.jsonl")],
        "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path / "sft"), "max_steps": 3,
        "vision_warmup_steps": 0, "instruct_warmup_steps": 0, "save_strategy": "no"})


def test_two_steps_log_every_reward_and_the_spread(tiny_model, synfacs_small, tmp_path):
    start = _tiny_sft(tiny_model, synfacs_small, tmp_path)
    out = grpo.main("configs/grpo/tiny-cpu.yaml", {
        "model": str(start), "data_paths": [str(synfacs_small / "train.jsonl")],
        "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path / "grpo"), "max_steps": 2,
        "logging_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2,
        "max_completion_length": 16, "save_strategy": "no"})
    logs = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [x for x in logs if "loss" in x]
    assert len(steps) == 2
    for entry in steps:
        for key in ("rewards/au_f1_reward/mean", "rewards/accuracy_reward/mean", "rewards/format_reward/mean",
                    "frac_reward_zero_std", "completions/mean_length", "time/generate", "time/reward"):
            assert key in entry and math.isfinite(entry[key]), key
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "facial_r1_prompt.json").read_text()) == {"prompt": "question", "max_new_tokens": 16}  # the trained length


def test_resume_after_a_real_kill(tiny_model, synfacs_small, tmp_path):
    start = _tiny_sft(tiny_model, synfacs_small, tmp_path)
    out = tmp_path / "grpo"
    cmd = [sys.executable, "-m", "facial_r1.cli", "grpo", "--config", "configs/grpo/tiny-cpu.yaml",
           "--model", str(start), "--data_paths", f"[{synfacs_small / 'train.jsonl'}]",
           "--image_folders", f"[{synfacs_small}]", "--output_dir", str(out), "--max_steps", "8",
           "--save_steps", "2", "--save_total_limit", "3", "--logging_steps", "1",
           "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint-4" / "trainer_state.json").is_file():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists(), "killed before the end"
    saved = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    last = saved[-1]
    before = json.loads((out / f"checkpoint-{last}" / "trainer_state.json").read_text())["log_history"]

    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    # the first `last` steps come from the checkpoint, not from a second run over them
    assert state["log_history"][:len(before)] == before
    assert [x["step"] for x in state["log_history"] if "loss" in x] == list(range(1, 9))


def test_au_rarity_weighting_adds_a_weight_per_data_set(synfacs_small):
    from facial_r1.data.schema import read_samples_with_images
    from facial_r1.grpo import grpo_dataset
    from facial_r1.rewards import au_rarity_weights

    samples, _ = read_samples_with_images(synfacs_small / "train.jsonl", [synfacs_small])
    samples = [{**s, "dataset": "a" if i % 2 else "b"} for i, s in enumerate(samples)]
    plain = grpo_dataset(samples, "question")
    assert "reward_weight" not in plain.column_names  # off by default
    weighted = grpo_dataset(samples, "question", au_rarity_weighting=True)
    for name in ("a", "b"):  # min-max normalised within each data set, as per file in the released loader
        idx = [i for i, s in enumerate(samples) if s["dataset"] == name]
        assert [weighted[i]["reward_weight"] for i in idx] == pytest.approx(au_rarity_weights([samples[i]["AUs"] for i in idx]))


def _trl_advantages(rewards_per_func, weights, g, scale):
    """TRL 1.x's sum_then_normalize advantage, written out directly (GRPOTrainer._generate_and_score_completions)."""
    import torch

    rewards = (rewards_per_func * weights).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g)
    valid = ~torch.isnan(rewards)
    if scale == "group":
        std = torch.stack([x[~torch.isnan(x)].std() for x in rewards.view(-1, g)]).repeat_interleave(g)
    else:
        std = rewards[valid].std().expand_as(rewards)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_reward_shares_add_up_to_trls_advantage(scale):
    import torch

    torch.manual_seed(0)
    rpf = torch.rand(12, 3)          # 3 groups of 4 completions, 3 rewards
    rpf[4:8, 1] = torch.nan          # the accuracy reward skipped a whole group (no label)
    rpf[9, 0] = torch.nan            # one reward skipped one completion
    rpf[11] = torch.nan              # every reward skipped this one: no advantage
    weights = torch.tensor([1.0, 2.0, 0.5])
    shares = grpo.reward_shares(rpf, weights, 4, scale)
    assert torch.allclose(shares.sum(dim=1), _trl_advantages(rpf, weights, 4, scale), atol=1e-5)
    assert torch.all(shares[4:8, 1] == 0) and torch.all(shares[11] == 0)


def test_block_masks_follow_the_parser_on_real_tokens(tiny_model):
    """With the tiny tokenizer '</think><answer>' is tokenized '</', 'think', '><', 'answer', '>'."""
    import torch

    from facial_r1 import models

    _, processor = models.load(str(tiny_model))
    tok = processor.tokenizer
    texts = ["<think>brows lowered (AU4)</think><answer>Anger</answer>", "no tags at all"]
    encoded = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, encoded)) + 2
    ids = torch.tensor([e + [tok.pad_token_id or 0] * (width - len(e)) for e in encoded])
    keep = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    masks = grpo.block_masks(processor, ids, keep)

    def text(block, row):
        return "".join(tok.decode([i]) for i, m in zip(ids[row].tolist(), masks[block][row].tolist()) if m)

    assert text("think", 0).strip() == "brows lowered (AU4)" and text("answer", 0) == "Anger"
    assert masks["think"][1].sum() == 0 and masks["answer"][1].sum() == 0
    assert torch.equal(masks["all"], keep)
    # AU F1's share on the think tokens, accuracy's on the answer tokens, format's everywhere
    shares = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.0, -0.4]])
    adv = grpo.token_advantages(shares, masks, ["think", "answer", None])
    think, answer = masks["think"][0].bool(), masks["answer"][0].bool()
    assert torch.allclose(adv[0][think], torch.tensor(0.4)) and torch.allclose(adv[0][answer], torch.tensor(-0.1))
    assert torch.allclose(adv[0][keep[0].bool() & ~think & ~answer], torch.tensor(0.1))  # the tags themselves
    assert torch.all(adv[1][keep[1].bool()] == -0.4) and torch.all(adv[:, -1] == 0)


def test_token_credit_run_gives_per_token_advantages(tiny_model, synfacs_small, tmp_path):
    start = _tiny_sft(tiny_model, synfacs_small, tmp_path)
    seen = []
    original = grpo.TimedGRPOTrainer._generate_and_score_completions

    def spy(self, inputs):
        out = original(self, inputs)
        seen.append(tuple(out["advantages"].shape) == tuple(out["completion_ids"].shape))
        return out

    grpo.TimedGRPOTrainer._generate_and_score_completions = spy
    try:
        out = grpo.main("configs/grpo/tiny-cpu.yaml", {
            "model": str(start), "data_paths": [str(synfacs_small / "train.jsonl")],
            "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path / "grpo"), "max_steps": 2,
            "logging_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2,
            "max_completion_length": 16, "save_strategy": "no", "token_credit": True})
    finally:
        grpo.TimedGRPOTrainer._generate_and_score_completions = original
    assert seen and all(seen)  # (B, T) advantages reached TRL's loss
    logs = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert all("credit/think_token_share" in x for x in logs if "loss" in x)


def test_token_credit_needs_summed_rewards(synfacs_small, tmp_path):
    with pytest.raises(FacialR1Error, match="token_credit: true needs multi_objective_aggregation: sum_then_normalize"):
        grpo.main("configs/grpo/tiny-cpu.yaml", {
            "model": "unused", "data_paths": [str(synfacs_small / "train.jsonl")], "image_folders": [str(synfacs_small)],
            "output_dir": str(tmp_path / "g"), "token_credit": True, "multi_objective_aggregation": "normalize_then_sum"})
