"""Prompts: the analysis prompt (SFT, GRPO, eval, inference), the guided prompt (data
synthesis: adds the true AUs and emotion, and on a retry the faults of the last attempt),
and the chat messages transformers/TRL expect (an image part, then a text part)."""

from __future__ import annotations

from collections.abc import Sequence

from facial_r1.facs import AU_TABLE, EMOTIONS

DEFAULT_QUESTION = "What emotion does this face show?"


def au_definitions() -> str:
    return "\n".join(f"{au.code} {au.name}: {au.look}." for au in AU_TABLE.values())


def analysis_prompt(question: str = DEFAULT_QUESTION, definitions: bool = True) -> str:
    """The question, then the output requirements; optionally the AU definitions.

    The tiny CPU default turns the definitions off: they cost ~600 prompt tokens per
    sample, and a randomly initialised model cannot use them anyway.
    """
    parts = [
        question.strip(),
        "Describe the facial Action Units you see inside <think></think>, naming each AU "
        "in parentheses, as in \"brows pulled together (AU4)\". Then give one emotion from "
        f"{{{', '.join(EMOTIONS)}}} inside <answer></answer>.",
    ]
    if definitions:
        parts.append("Action Units:\n" + au_definitions())
    return "\n".join(parts)


def guided_prompt(
    question: str,
    aus: Sequence[str],
    emotion: str,
    faults: Sequence[str] = (),
    definitions: bool = True,
) -> str:
    """The analysis prompt plus the ground truth, and on a retry what was wrong last time."""
    text = analysis_prompt(question, definitions)
    listed = ", ".join(aus) if aus else "none"
    text += f"\nThe face shows these Action Units: {listed}. The emotion is {emotion}."
    text += " Cite exactly these AUs and answer with that emotion."
    if faults:
        text += "\nYour previous answer was rejected: " + "; ".join(faults) + "."
    return text


def user_message(prompt: str) -> list[dict]:
    """One user turn with an image placeholder and the prompt text (chat format)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def sft_messages(prompt: str, answer: str) -> list[dict]:
    return user_message(prompt) + [
        {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    ]
