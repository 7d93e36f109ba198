"""Prompts: the analysis prompt (SFT, GRPO, eval, inference), the guided prompt (data
synthesis: adds the true AUs and emotion, and on a retry the faults of the last attempt),
and the chat messages transformers/TRL expect (an image part, then a text part)."""

from __future__ import annotations

from collections.abc import Sequence

from facial_r1.errors import FacialR1Error
from facial_r1.facs import AU_TABLE, EMOTIONS, PROMPT_AUS

DEFAULT_QUESTION = "What emotion does this face show?"


def au_definitions() -> str:
    """The glossary of the "full" prompt: the AUs Facial-R1's released prompt defines."""
    return "\n".join(f"{au.code} {au.name}: {au.look}." for au in (AU_TABLE[c] for c in PROMPT_AUS))


# How much the analysis prompt spells out. "full": the question, the output requirements and
# the AU definitions (real models); "instructions": without the definitions; "question": the
# question alone, for the tiny CPU default, which cannot read instructions: the format comes
# from SFT, and a short prompt leaves its attention on the 16 image tokens (measured: held-out
# accuracy 0.29 -> 0.43 after the same 3 min of SFT, and ~40 % faster steps).
PROMPT_STYLES = ("full", "instructions", "question")


def analysis_prompt(question: str = DEFAULT_QUESTION, style: str = "full") -> str:
    """The prompt for analysing a face, in one of PROMPT_STYLES."""
    if style not in PROMPT_STYLES:
        raise FacialR1Error(f"unknown prompt style {style!r}; choose from {PROMPT_STYLES}")
    parts = [question.strip()]
    if style != "question":
        parts.append(
            "Describe the facial Action Units you see inside <think></think>, naming each AU "
            "in parentheses, as in \"brows pulled together (AU4)\". Then give one emotion from "
            f"{{{', '.join(EMOTIONS)}}} inside <answer></answer>.")
    if style == "full":
        parts.append("Action Units:\n" + au_definitions())
    return "\n".join(parts)


def guided_prompt(
    question: str,
    aus: Sequence[str],
    emotion: str,
    faults: Sequence[str] = (),
    style: str = "full",
) -> str:
    """The analysis prompt plus the ground truth, and on a retry what was wrong last time."""
    text = analysis_prompt(question, style)
    listed = ", ".join(aus) if aus else "none"
    text += f"\nThe face shows these Action Units: {listed}. The emotion is {emotion}."
    text += " Cite exactly these AUs and answer with that emotion."
    # The "question" style is for a model that cannot read instructions (the tiny default): a
    # retry's feedback would be text it never saw, and it copied the tags the format message
    # names ("<think><answer>...") into its reply. Its retries resample the same prompt.
    if faults and style != "question":
        text += "\nYour previous answer was rejected: " + "; ".join(faults) + "."
    return text


def user_message(prompt: str) -> list[dict]:
    """One user turn with an image placeholder and the prompt text (chat format)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def assistant_message(answer: str) -> list[dict]:
    """The assistant turn holding a target analysis (the SFT completion)."""
    return [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
