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


def test_guided_prompt_carries_truth_and_faults():
    text = guided_prompt("Which emotion?", ["AU1", "AU4"], "Sadness", ["you answered Fear"], "question")
    assert text == ("Which emotion?\nThe face shows these Action Units: AU1, AU4. The emotion is Sadness. "
                    "Cite exactly these AUs and answer with that emotion.\n"
                    "Your previous answer was rejected: you answered Fear.")


def test_tiny_template_drops_only_the_default_system_turn():
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    from facial_r1.models import without_default_system

    out = without_default_system(qwen2_5_vl_chat_template)
    assert "You are a helpful assistant." not in out
    assert "<|im_start|>{{ message['role'] }}" in out
    with pytest.raises(FacialR1Error, match="template changed"):
        without_default_system(out)
