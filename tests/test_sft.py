import json
import math

import pytest
import torch

from facial_r1 import checkpoints, generation, sft


def test_sft_few_steps_changes_weights(tiny_model, synfacs_small, tmp_path):
    before, _ = checkpoints.load(str(tiny_model))
    out = sft.main(None, {
        "model": str(tiny_model), "data_paths": [str(synfacs_small / "train.jsonl")],
        "image_folders": [str(synfacs_small)], "prompt": "question", "miniature": {"vision_warmup_steps": 2},
        "output_dir": str(tmp_path / "sft"), "max_steps": 4, "per_device_train_batch_size": 4,
        "learning_rate": 1e-3, "logging_steps": 1, "report_to": "none", "use_cpu": True, "save_strategy": "no",
    })
    after, processor = checkpoints.load(str(out))
    changed = [n for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters(), strict=True)
               if not torch.equal(a, b)]
    n_params = len(list(before.parameters()))
    assert len(changed) == n_params, f"unchanged: {n_params - len(changed)} tensors"
    assert checkpoints.read_prompt_settings(out) == {"prompt": "question"}
    # the saved checkpoint generates
    from PIL import Image
    text = generation.generate(after, processor, [Image.new("RGB", (112, 112))], ["What emotion?"], max_new_tokens=4)
    assert isinstance(text[0], str)


def test_sft_logs_finite_loss(tiny_model, synfacs_small, tmp_path, caplog):
    from trl import SFTTrainer

    seen = []
    orig = SFTTrainer.log

    def spy(self, logs, *a, **k):
        seen.append(logs)
        return orig(self, logs, *a, **k)

    SFTTrainer.log = spy
    try:
        sft.main(None, {
            "model": str(tiny_model), "data_paths": [str(synfacs_small / "train.jsonl")],
            "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path / "sft"), "max_steps": 2,
            "per_device_train_batch_size": 2, "logging_steps": 1, "report_to": "none", "use_cpu": True,
            "save_strategy": "no",
        })
    finally:
        SFTTrainer.log = orig
    losses = [x["loss"] for x in seen if "loss" in x]
    assert losses and all(math.isfinite(float(v)) for v in losses)


def test_bad_inputs_stop_before_loading(tmp_path, tiny_model, synfacs_small, monkeypatch):
    from facial_r1.errors import FacialR1Error

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "image": "x.png", "AUs": ["brow"]}\n')
    with monkeypatch.context() as m, \
            pytest.raises(FacialR1Error, match="no usable samples.*bad.jsonl:1: malformed AU code 'brow'"):
        m.setattr(checkpoints, "load", lambda *a, **k: pytest.fail("loaded the model"))
        sft.main(None, {"model": str(tiny_model), "data_paths": [str(bad)],
                        "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path / "o"), "use_cpu": True})
    with pytest.raises(FacialR1Error, match="sft: model does/not/exist/anywhere not found"):  # the preflight
        sft.main(None, {"model": "does/not/exist/anywhere", "data_paths": [str(bad)],
                        "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path / "o"), "use_cpu": True})
    with pytest.raises(FacialR1Error, match="model path ./nope does not exist"):
        checkpoints.load("./nope")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(FacialR1Error, match="has no processor"):
        checkpoints.load(str(tmp_path / "m"))


def test_lora_targets_language_model_only(tiny_model):
    model, _ = checkpoints.load(str(tiny_model), lora={"r": 4})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    frozen, _ = checkpoints.load(str(tiny_model), freeze_vision=True)
    assert not any(p.requires_grad for p in checkpoints.vision_parameters(frozen))


def test_processor_pixel_limits(tiny_model):
    p = checkpoints.load_processor(str(tiny_model))
    assert p.image_processor.size == {"shortest_edge": 112 * 112, "longest_edge": 112 * 112}
    p = checkpoints.load_processor(str(tiny_model), min_pixels=56 * 56, max_pixels=224 * 224)
    assert p.image_processor.size == {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}


def test_warmstart_trains_vision_and_keeps_freeze(tiny_model, synfacs_small):
    from facial_r1.data.schema import read_samples_with_images
    from facial_r1.miniature import vision_warmup

    samples, _ = read_samples_with_images(synfacs_small / "train.jsonl", [synfacs_small])
    model, processor = checkpoints.load(str(tiny_model), freeze_vision=True)
    before = [p.detach().clone() for p in checkpoints.vision_parameters(model)]
    stats = vision_warmup(model, processor, samples, steps=3, batch_size=8)
    assert stats["steps"] == 3 and stats["labels_seen"] == "AUs + emotion"
    assert any(not torch.equal(a, b) for a, b in zip(before, checkpoints.vision_parameters(model), strict=True))
    assert not any(p.requires_grad for p in checkpoints.vision_parameters(model))  # still frozen for SFT


def test_warmstart_is_the_same_for_the_same_steps_and_seed(tiny_model):
    from facial_r1.miniature import vision_warmup

    weights = []
    for _ in range(2):
        model, processor = checkpoints.load(str(tiny_model))
        vision_warmup(model, processor, [], steps=2, batch_size=4, seed=1, extra_faces=8, objective="selfsup")
        weights.append([p.detach().clone() for p in checkpoints.vision_parameters(model)])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_selfsup_warmstart_sees_no_expression_label(tiny_model, monkeypatch):
    """The label-free objective's targets do not change when only the expression changes."""
    from facial_r1.data.synfacs import make_sample
    from facial_r1.miniature import selfsup_target, vision_warmup

    sample, image = make_sample(0, "t", 112)
    hair, rest = selfsup_target(sample, image)
    numbers = rest[:-28 * 28]  # identity and pose; the rest is the thumbnail
    assert hair.sum() == 1 and numbers.min() >= -0.01 and numbers.max() <= 1.01
    other = {**sample, "AUs": ["AU12"], "labels": ["Happiness"], "meta_info": {**sample["meta_info"], "intensity": {}}}
    assert (selfsup_target(other, image)[1] == rest).all()
    # the run's labelled samples are not used at all: only freshly rendered faces
    model, processor = checkpoints.load(str(tiny_model))
    labelled = [{"image_path": "/nonexistent.png", "AUs": ["AU1"], "labels": ["Fear"]}]
    stats = vision_warmup(model, processor, labelled, steps=1, batch_size=4, extra_faces=4, objective="selfsup")
    assert stats["faces"] == 4 and stats["labels_seen"].startswith("none")


@pytest.mark.parametrize("kwargs, message", [
    ({"objective": "pixels"}, "unknown vision_warmup_objective 'pixels'"),
    ({"objective": "selfsup"}, "has no faces: give vision_warmup_faces > 0"),  # selfsup renders its own
])
def test_warmstart_refuses_bad_settings(tiny_model, kwargs, message):
    from facial_r1.errors import FacialR1Error
    from facial_r1.miniature import vision_warmup

    model, processor = checkpoints.load(str(tiny_model))
    with pytest.raises(FacialR1Error, match=message):
        vision_warmup(model, processor, [], steps=1, **kwargs)


def test_guided_fraction_mixes_in_the_guided_prompt(synfacs_small):
    from facial_r1.data.schema import read_samples_with_images
    from facial_r1.miniature import Miniature

    samples, _ = read_samples_with_images(synfacs_small / "train.jsonl", [synfacs_small])
    samples = [s for s in samples if s["description"]]
    texts = [r["prompt"][0]["content"][1]["text"] for r in sft.sft_dataset(samples, "question", Miniature(guided_fraction=0.5), seed=0)]
    guided = [t for t in texts if "The face shows these Action Units" in t]
    assert 0 < len(guided) < len(texts)
    assert all(t == "What emotion does this face show?" for t in texts if t not in guided)
    assert sft.sft_dataset(samples, "question")[0]["completion"][0]["content"][0]["text"] == \
        samples[0]["description"]


def test_instruct_rows_cite_the_listed_aus_with_no_face_and_no_pairing():
    import re
    from collections import Counter

    from facial_r1.parse import parse_completion
    from facial_r1.miniature import instruct_rows

    rows = instruct_rows(2000, seed=3, prompt_style="question")
    assert rows == instruct_rows(2000, seed=3, prompt_style="question")  # seeded
    pairs = Counter()
    for r in rows:
        (part,) = r["prompt"][0]["content"]
        assert part["type"] == "text"  # no image anywhere
        listed = re.search(r"Action Units: (.*)\. The emotion is (\w+)\.", part["text"])
        aus = [] if listed[1] == "none" else listed[1].split(", ")
        got = parse_completion(r["completion"][0]["content"][0]["text"])
        assert got.format_valid and list(got.aus) == aus and got.answer == listed[2]
        pairs[listed[2], len(aus) > 0] += 1
    # emotions are drawn apart from the lists: a neutral answer with AUs, every emotion with none
    assert pairs["Neutral", True] > 100 and all(pairs[e, False] > 0 for e, _ in pairs)


def test_sft_runs_the_instruction_warm_start_first(tiny_model, synfacs_small, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="facial_r1")
    sft.main(None, {
        "model": str(tiny_model), "data_paths": [str(synfacs_small / "train.jsonl")],
        "image_folders": [str(synfacs_small)], "prompt": "question", "miniature": {"instruct_warmup_steps": 3},
        "output_dir": str(tmp_path / "sft"), "max_steps": 2, "per_device_train_batch_size": 2,
        "report_to": "none", "use_cpu": True, "save_strategy": "no",
    })
    assert "instruction warm-start: 3 steps on 6 text-only guided prompts (no face)" in caplog.text
    assert caplog.text.index("instruction warm-start") < caplog.text.rindex("SFT model saved")


def test_a_run_logs_to_tensorboard_offline_and_the_values_read_back(tiny_model, synfacs_small, tmp_path):
    """The tracker the shipped configs use (report_to: tensorboard): event files under the stage's
    output folder, read back with TensorBoard's own reader, one loss per logged step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = sft.main("configs/sft/tiny-cpu.yaml", {
        "model": str(tiny_model), "data_paths": [str(synfacs_small / "train.jsonl")],
        "image_folders": [str(synfacs_small)], "output_dir": str(tmp_path / "sft"), "max_steps": 3,
        "logging_steps": 1, "miniature": None, "save_strategy": "no"})
    [events] = (out / "runs").glob("*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    state = [x["loss"] for x in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in x]
    assert len(losses) == 3 and losses == pytest.approx(state, rel=1e-6)
    assert {"train/learning_rate", "train/grad_norm"} <= set(acc.Tags()["scalars"])
