import pytest

from facial_r1.errors import FacialR1Error
from facial_r1.prompts import analysis_prompt, guided_prompt


@pytest.mark.parametrize("style, has_rules, has_definitions", [
    ("full", True, True),            # real models: everything
    ("instructions", True, False),   # no AU glossary
    ("question", False, False),      # tiny default: the question alone
])
def test_prompt_styles(style, has_rules, has_definitions):
    text = analysis_prompt("Which emotion?", style)
    assert text.startswith("Which emotion?")
    assert ("<answer></answer>" in text) is has_rules
    assert ("AU4 Brow Lowerer: brows lowered" in text) is has_definitions


def test_question_style_is_only_the_question():
    assert analysis_prompt("Which emotion?", "question") == "Which emotion?"


def test_unknown_style_is_an_error():
    with pytest.raises(FacialR1Error, match="unknown prompt style 'short'"):
        analysis_prompt("q", "short")


@pytest.mark.parametrize("style, feedback", [
    ("instructions", True),  # a model that reads instructions is told what was wrong
    ("full", True),
    ("question", False),  # the tiny default cannot read them: its retry resamples the same prompt
])
def test_guided_prompt_carries_truth_and_faults(style, feedback):
    text = guided_prompt("Which emotion?", ["AU1", "AU4"], "Sadness", ["you answered Fear"], style)
    assert "The face shows these Action Units: AU1, AU4. The emotion is Sadness." in text
    assert text.endswith("\nYour previous answer was rejected: you answered Fear.") == feedback
    if style == "question":
        assert text == ("Which emotion?\nThe face shows these Action Units: AU1, AU4. The emotion is Sadness. "
                        "Cite exactly these AUs and answer with that emotion.")


def test_grpo_guided_fraction_mixes_in_the_guided_prompt(synfacs_small):
    from facial_r1.data.schema import read_samples_with_images
    from facial_r1.grpo import grpo_dataset
    from facial_r1.miniature import Miniature

    samples, _ = read_samples_with_images(synfacs_small / "train.jsonl", [synfacs_small])
    texts = lambda g: [r["prompt"][0]["content"][1]["text"]  # noqa: E731
                       for r in grpo_dataset(samples, "question", Miniature(guided_fraction=g), seed=0)]
    assert not any("Action Units:" in t for t in texts(0.0))
    assert all("Action Units:" in t for t in texts(1.0))
    half = texts(0.5)
    assert 0 < sum("Action Units:" in t for t in half) < len(half) and half == texts(0.5)  # seeded


def test_tiny_template_drops_only_the_default_system_turn():
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    from facial_r1.tiny import without_default_system

    out = without_default_system(qwen2_5_vl_chat_template)
    assert "You are a helpful assistant." not in out
    assert "<|im_start|>{{ message['role'] }}" in out
    with pytest.raises(FacialR1Error, match="template changed"):
        without_default_system(out)
