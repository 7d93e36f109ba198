import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from facial_r1 import grpo
from facial_r1.config import resolve
from facial_r1.errors import FacialR1Error
from trl import GRPOConfig


def test_tiny_config_parses():
    # the embedded default: 8 prompts x 4 generations, a quarter guided, completions as long as eval's (128) with cut-off
    # ones masked, a KL anchor, Dr. GRPO loss
    run, args = resolve("configs/grpo/tiny-cpu.yaml", {}, grpo.GRPORun, GRPOConfig, "grpo").build()
    assert run.miniature == {"guided_fraction": 0.25}
    assert run.rewards == ["au_f1", "accuracy", "format"] and args.reward_weights == [1.0, 1.0, 1.0]
    assert (args.num_generations, args.max_completion_length, args.beta, args.loss_type) == (4, 128, 0.04, "dr_grpo")
    assert args.per_device_train_batch_size == 32  # 8 prompts a step
    assert args.mask_truncated_completions
    assert not args.bf16 and not args.activation_checkpointing  # set in the file, not TRL's defaults


@pytest.mark.parametrize("overrides, message", [
    ({"rewards": ["au_f1", "smile_bonus"]}, r"unknown reward\(s\) \['smile_bonus'\]"),
    ({"reward_weights": [1.0, 2.0]}, "2 reward_weights for 3 rewards"),
    ({"num_generatons": 4}, r"unknown key\(s\) \['num_generatons'\]"),
])
def test_bad_config_is_an_error_before_training(overrides, message, synfacs_small, tmp_path):
    with pytest.raises(FacialR1Error, match=message):
        grpo.main("configs/grpo/tiny-cpu.yaml", {"model": "no/such/model/here", "output_dir": str(tmp_path),
                                                 "data_paths": [str(synfacs_small / "train.jsonl")],
                                                 "image_folders": [str(synfacs_small)], **overrides})


def test_dataset_without_au_labels_is_refused_for_the_au_reward(tiny_model, synfacs_small, tmp_path):
    rows = [json.loads(line) for line in (synfacs_small / "train.jsonl").read_text().splitlines()]
    emotion_only = tmp_path / "fer_like.jsonl"
    emotion_only.write_text("".join(json.dumps({**r, "AUs": None}) + "\n" for r in rows))
    with pytest.raises(FacialR1Error, match=r"fer_like.jsonl: dataset lacks column\(s\) \['AUs'\]"):
        grpo.main("configs/grpo/tiny-cpu.yaml", {"model": str(tiny_model), "output_dir": str(tmp_path),
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
        "miniature": {"vision_warmup_steps": 0, "instruct_warmup_steps": 0}, "save_strategy": "no"})


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
                    "frac_reward_zero_std", "completions/mean_length", "kl", "step_time", "time/generate",
                    "time/reward/au_f1_reward", "time/reward/format_reward"):
            assert key in entry and math.isfinite(entry[key]), key
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "facial_r1_prompt.json").read_text()) == {"prompt": "question", "max_new_tokens": 16}  # the trained length
    # the same values reach the tracker (TensorBoard, offline), phase times included
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = (out / "runs").glob("*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/time/generate")] == pytest.approx([x["time/generate"] for x in steps])
    assert {"train/kl", "train/reward", "train/completions/mean_length"} <= set(acc.Tags()["scalars"])


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


@pytest.mark.parametrize("scale", ["batch", "none"])
def test_au_rarity_weighting_changes_the_loss(guided_model, synfacs_small, tmp_path, scale):
    """A row's weight scales its rewards; under scale_rewards batch/none that scales its advantage,
    so the loss TRL logs differs from the same step unweighted (the preflight refuses `group`,
    where a group's own spread divides the weight away). The start writes the format, so
    completions differ in length and a group's advantages do not cancel in the loss."""
    start = guided_model
    losses = []
    for weighting in (False, True):
        out = grpo.main("configs/grpo/tiny-cpu.yaml", {
            "model": str(start), "data_paths": [str(synfacs_small / "train.jsonl")],
            "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path / f"grpo{weighting}"), "max_steps": 1,
            "logging_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4, "temperature": 1.2,
            "max_completion_length": 96, "save_strategy": "no", "scale_rewards": scale, "beta": 0.0,
            "au_rarity_weighting": weighting})
        logs = json.loads((out / "trainer_state.json").read_text())["log_history"]
        losses.append([x for x in logs if "loss" in x][0])
    plain, weighted = losses
    assert plain["reward"] != weighted["reward"]  # the weights reached the rewards
    assert plain["loss"] != weighted["loss"]


def test_au_rarity_weighting_with_group_scaling_is_refused(synfacs_small, tmp_path):
    with pytest.raises(FacialR1Error, match="au_rarity_weighting .* cancels it"):
        grpo.main("configs/grpo/tiny-cpu.yaml", {
            "model": "unused", "data_paths": [str(synfacs_small / "train.jsonl")], "image_folders": [str(synfacs_small)],
            "output_dir": str(tmp_path / "g"), "au_rarity_weighting": True, "scale_rewards": "group"})


def test_shuffled_labels_keep_the_marginals_and_break_every_pairing():
    """The negative control's labels: every row gets another row's AUs and emotion together."""
    samples = [{"id": str(i), "AUs": [f"AU{i}"], "labels": [e]} for i, e in
               enumerate(["Anger", "Fear", "Happiness", "Sadness", "Surprise", "Disgust"])]
    out = grpo.shuffled_labels(samples, seed=3)
    assert sorted(s["labels"][0] for s in out) == sorted(s["labels"][0] for s in samples)  # same marginals
    assert all(o["labels"] != s["labels"] for o, s in zip(out, samples))  # no row keeps its own
    pairs = {(s["AUs"][0], s["labels"][0]) for s in samples}
    assert all((o["AUs"][0], o["labels"][0]) in pairs for o in out)  # AUs and emotion move together
    assert [o["id"] for o in out] == [s["id"] for s in samples] and samples[0]["labels"] == ["Anger"]  # input kept
    assert grpo.shuffled_labels(samples, seed=3) == out  # seeded
