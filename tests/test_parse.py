import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facial_r1.facs import EMOTIONS
from facial_r1.parse import completion_text, parse_completion

GOOD = "<think>brows pulled together (AU4) and lids tight (AU07)</think><answer>angry</answer>"


@pytest.mark.parametrize("text, aus, answer, valid", [
    (GOOD, ("AU4", "AU7"), "Anger", True),                                       # canonical
    ("  <think>x (AU12)</think>\n<answer>Happiness</answer>\n", ("AU12",), "Happiness", True),  # whitespace ok
    ("<think>(AU4) (AU4) (au 9)</think><answer>Disgust</answer>", ("AU4", "AU9"), "Disgust", True),  # dedup
    ("<think>x</think><answer>bored</answer>", (), None, True),                   # valid shape, not an emotion
    ("<answer>Sadness</answer>", (), "Sadness", False),                          # no think
    ("<think>a (AU1)</think>", ("AU1",), None, False),                           # no answer
    ("<think>a</think><think>b</think><answer>Fear</answer>", (), "Fear", False), # two think blocks
    ("<answer>Fear</answer><think>(AU5)</think>", ("AU5",), "Fear", False),     # wrong order
    ("<think>x</think>junk<answer>Fear</answer>", (), "Fear", False),            # text between
    ("<think>x</think><answer>Fear</answer>tail", (), "Fear", False),            # text after
    ("<think><think>(AU2)</think></think><answer>Fear</answer>", ("AU2",), "Fear", False),  # nested
    ("<think>AU123 and AU3 (AU26)</think><answer>Surprise</answer>", ("AU26",), "Surprise", True),  # unknown dropped
    ("", (), None, False),
])
def test_parse_table(text, aus, answer, valid):
    a = parse_completion(text)
    assert (a.aus, a.answer, a.format_valid) == (aus, answer, valid)


def test_parse_non_string_and_huge():
    assert parse_completion(None).format_valid is False
    big = "<think>" + "(AU4) " * 20000 + "</think><answer>Anger</answer>"
    a = parse_completion(big)
    assert a.aus == ("AU4",) and a.format_valid


def test_completion_text_chat_format():
    chat = [{"role": "assistant", "content": GOOD}]
    parts = [{"role": "assistant", "content": [{"type": "text", "text": GOOD}]}]
    assert completion_text(chat) == completion_text(parts) == completion_text(GOOD) == GOOD


TAGS = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "(AU4)", "AU12", "Happy", " ", "\n", "é"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(TAGS, st.text(max_size=20)), max_size=40))
def test_parse_never_raises_and_is_consistent(parts):
    text = "".join(parts)
    a = parse_completion(text)
    assert isinstance(a.format_valid, bool)
    assert len(set(a.aus)) == len(a.aus)
    assert all(au.startswith("AU") for au in a.aus)
    if a.format_valid:  # a valid completion re-parses identically when rebuilt
        again = parse_completion(f"<think>{a.reasoning}</think><answer>{a.answer_text}</answer>")
        assert again.aus == a.aus and again.answer == a.answer


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_parse_arbitrary_unicode(text):
    """Whatever the text: what the parser reports is in the text, and nothing comes from nowhere."""
    a = parse_completion(text)
    assert a.answer is None or a.answer in EMOTIONS
    assert a.format_valid <= ("<think>" in text and "</think>" in text and "<answer>" in text)
    assert all(au[2:] in text and au[2:].isdigit() for au in a.aus)  # each cited code's number is in the text
    if "au" not in text.lower():
        assert a.aus == ()
