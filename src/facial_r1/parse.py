"""The one parser of model output. Rewards, evaluation, synthesis QC and the CLI all call
`parse_completion`; nothing else in the project reads `<think>`/`<answer>` tags.

>>> a = parse_completion("<think>brows pulled together (AU4), lids tight (AU7)</think><answer>angry</answer>")
>>> a.aus, a.answer, a.format_valid
(('AU4', 'AU7'), 'Anger', True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from facial_r1.facs import try_normalize_au, try_normalize_emotion

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
# An AU citation: "AU4", "AU 04", "au12" (not part of a longer word such as "AU123").
_AU_CITE = re.compile(r"(?<![A-Za-z0-9])AU\s?0*(\d{1,2})(?!\d)", re.IGNORECASE)


@dataclass(frozen=True)
class Analysis:
    reasoning: str  # the think block (or, if malformed, the text before any answer tag)
    aus: tuple[str, ...]  # AUs cited in the reasoning: in order, deduplicated, normalised
    answer: str | None  # canonical emotion, or None if missing / not an emotion
    answer_text: str  # the raw answer block content ("" if none)
    format_valid: bool  # exactly one think block, then exactly one answer block, nothing else


def parse_completion(text: object) -> Analysis:
    """Parse one completion. Never raises: any input gives an Analysis."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    counts = [text.count(tag) for tag in _TAGS]
    t0, t1 = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    a0, a1 = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)

    format_valid = (
        counts == [1, 1, 1, 1]
        and not text[:t0].strip()  # the think block opens the text
        and t0 < t1 < a0 < a1
        and not text[t1 + len(THINK_CLOSE):a0].strip()
        and not text[a1 + len(ANSWER_CLOSE):].strip()
    )

    spans = block_spans(text)
    if "think" in spans:
        reasoning = text[slice(*spans["think"])]
    else:
        reasoning = text[:a0] if a0 != -1 else text
        reasoning = reasoning.replace(THINK_OPEN, "").replace(THINK_CLOSE, "")

    answer_text = text[slice(*spans["answer"])] if "answer" in spans else ""
    return Analysis(
        reasoning=reasoning.strip(),
        aus=cited_aus(reasoning),
        answer=try_normalize_emotion(answer_text),
        answer_text=answer_text.strip(),
        format_valid=format_valid,
    )


def block_spans(text: str) -> dict[str, tuple[int, int]]:
    """(start, end) character spans of the think and answer blocks' contents, as `parse_completion`
    reads them (first open tag to the first close tag after it); a missing block is absent.

    >>> block_spans("<think>AU4</think><answer>Anger</answer>")
    {'think': (7, 10), 'answer': (26, 31)}
    """
    spans = {}
    for name, open_tag, close_tag in (("think", THINK_OPEN, THINK_CLOSE), ("answer", ANSWER_OPEN, ANSWER_CLOSE)):
        start, end = text.find(open_tag), text.find(close_tag)
        if start != -1 and end > start:
            spans[name] = (start + len(open_tag), end)
    return spans


def cited_aus(text: str) -> tuple[str, ...]:
    """AUs named in `text`, in first-mention order, unknown codes dropped."""
    seen: dict[str, None] = {}
    for m in _AU_CITE.finditer(text):
        au = try_normalize_au(m.group(1))
        if au is not None:
            seen.setdefault(au, None)
    return tuple(seen)


def completion_text(completion: object) -> str:
    """TRL passes completions as strings or as chat lists [{'role','content'}, ...]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        parts = []
        for message in completion:
            content = message.get("content", "") if isinstance(message, dict) else message
            if isinstance(content, list):  # multimodal content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(str(content))
        return "".join(parts)
    return "" if completion is None else str(completion)
