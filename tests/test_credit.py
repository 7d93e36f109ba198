"""Token credit (credit.py): the per-reward shares against TRL's own advantage code, the token
masks on real tokens, and a loss that really differs with it on."""

import json

import pytest
import torch

from facial_r1 import credit, grpo
from facial_r1.errors import FacialR1Error


@pytest.fixture(scope="module")
def start(guided_model):
    """A model that writes the format (think and answer blocks), so that the blocks' masks differ."""
    return guided_model


@pytest.fixture(scope="module")
def partly_labelled(synfacs_small, tmp_path_factory):
    """The train faces with every third label removed: the accuracy reward skips those (NaN in TRL)."""
    rows = [json.loads(x) for x in (synfacs_small / "train.jsonl").read_text().splitlines()]
    out = tmp_path_factory.mktemp("partial") / "train.jsonl"
    out.write_text("".join(json.dumps({**r, "labels": [] if i % 3 == 0 else r["labels"]}) + "\n"
                           for i, r in enumerate(rows)))
    return out


def _run(start, data, folder, out, **extra):
    return grpo.main("configs/grpo/tiny-cpu.yaml", {
        "model": str(start), "data_paths": [str(data)], "image_folders": [str(folder)], "output_dir": str(out),
        "max_steps": 1, "logging_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4,
        "temperature": 1.2, "max_completion_length": 96, "save_strategy": "no", "reward_weights": [1.0, 2.0, 0.5],
        **extra})


def _step(out):
    return [x for x in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in x][0]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_the_shares_add_up_to_trls_own_advantage(start, partly_labelled, synfacs_small, tmp_path, scale):
    """TokenCreditGRPOTrainer checks on every step that its shares sum to the advantage TRL's own
    code computed (with skipped rewards, weights and each scaling): a TRL release that changes it
    stops the run. Here the check runs against TRL's real code and passes; then a TRL whose
    advantage differs is simulated and the run stops."""
    out = _run(start, partly_labelled, synfacs_small, tmp_path / "ok", token_credit=True, scale_rewards=scale)
    assert "credit/think_token_share" in _step(out)

    real = grpo.GRPOTrainer._generate_and_score_completions

    def drifted(self, inputs):  # a TRL whose advantage is no longer the shares' sum
        result = real(self, inputs)
        return {**result, "advantages": result["advantages"] * 1.5 + 0.1}

    grpo.GRPOTrainer._generate_and_score_completions = drifted
    try:
        with pytest.raises(FacialR1Error, match="no longer the sum of the per-reward shares"):
            _run(start, partly_labelled, synfacs_small, tmp_path / "drift", token_credit=True, scale_rewards=scale)
    finally:
        grpo.GRPOTrainer._generate_and_score_completions = real


def test_token_credit_changes_the_loss(start, synfacs_small, tmp_path):
    """The same step, the same seed: the (B, T) advantages reach TRL's loss and change it."""
    data = synfacs_small / "train.jsonl"
    plain = _step(_run(start, data, synfacs_small, tmp_path / "plain", scale_rewards="none"))
    credited = _step(_run(start, data, synfacs_small, tmp_path / "credit", scale_rewards="none", token_credit=True))
    assert plain["reward"] == credited["reward"]  # the same completions were drawn
    assert plain["loss"] != credited["loss"]
    assert 0 < credited["credit/think_token_share"] < 1


def test_block_masks_follow_the_parser_on_real_tokens(tiny_model):
    """With the tiny tokenizer '</think><answer>' is tokenized '</', 'think', '><', 'answer', '>'."""
    from facial_r1 import checkpoints

    _, processor = checkpoints.load(str(tiny_model))
    tok = processor.tokenizer
    texts = ["<think>brows lowered (AU4)</think><answer>Anger</answer>", "no tags at all"]
    encoded = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, encoded)) + 2
    ids = torch.tensor([e + [tok.pad_token_id or 0] * (width - len(e)) for e in encoded])
    keep = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    masks = credit.block_masks(processor, ids, keep)

    def text(block, row):
        return "".join(tok.decode([i]) for i, m in zip(ids[row].tolist(), masks[block][row].tolist()) if m)

    assert text("think", 0).strip() == "brows lowered (AU4)" and text("answer", 0) == "Anger"
    assert masks["think"][1].sum() == 0 and masks["answer"][1].sum() == 0
    assert torch.equal(masks["all"], keep)
    # AU F1's share on the think tokens, accuracy's on the answer tokens, format's everywhere
    shares = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.0, -0.4]])
    adv = credit.token_advantages(shares, masks, ["think", "answer", None])
    think, answer = masks["think"][0].bool(), masks["answer"][0].bool()
    assert torch.allclose(adv[0][think], torch.tensor(0.4)) and torch.allclose(adv[0][answer], torch.tensor(-0.1))
    assert torch.allclose(adv[0][keep[0].bool() & ~think & ~answer], torch.tensor(0.1))  # the tags themselves
    assert torch.all(adv[1][keep[1].bool()] == -0.4) and torch.all(adv[:, -1] == 0)


def test_token_credit_needs_summed_rewards(synfacs_small, tmp_path):
    with pytest.raises(FacialR1Error, match="token_credit needs multi_objective_aggregation: sum_then_normalize"):
        grpo.main("configs/grpo/tiny-cpu.yaml", {
            "model": "unused", "data_paths": [str(synfacs_small / "train.jsonl")], "image_folders": [str(synfacs_small)],
            "output_dir": str(tmp_path / "g"), "token_credit": True, "multi_objective_aggregation": "normalize_then_sum"})
