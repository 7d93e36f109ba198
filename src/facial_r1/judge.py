"""LLM-judge score: how consistent a model's reasoning is with the reference, 1 to 10, asked
of any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, a hosted API).

    facial-r1 eval ... --judge-url http://127.0.0.1:8000/v1 --judge-model NAME [--judge-key-env VAR]

A request that fails, times out or returns no score in 1..10 is counted as a failure and left
out of the mean, never scored 0.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import urllib.error
import urllib.request

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You grade explanations of facial expressions. Compare the candidate's reasoning with the "
    "reference: do they describe the same facial Action Units and reach the same emotion, "
    "without contradictions? Reply with one integer from 1 (unrelated or contradictory) to 10 "
    "(fully consistent), and nothing else.\n\nReference:\n{reference}\n\nCandidate:\n{candidate}"
)
_SCORE = re.compile(r"\b(10|[1-9])\b")


def parse_score(text: str) -> int | None:
    """The first integer 1..10 in a judge reply, else None.

    >>> parse_score("Score: 8/10"), parse_score("ten"), parse_score("0")
    (8, None, None)
    """
    m = _SCORE.search(text or "")
    return int(m.group(1)) if m else None


def judge_one(url: str, model: str, reference: str, candidate: str, api_key: str | None = None,
              timeout: float = 60.0) -> int | None:
    """One judge call; None on any failure (logged)."""
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": 8, "messages": [
        {"role": "user", "content": JUDGE_PROMPT.format(reference=reference, candidate=candidate)}]}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read())["choices"][0]["message"]["content"]
    except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        log.warning("judge request failed: %s", e)
        return None
    score = parse_score(reply)
    if score is None:
        log.warning("judge reply has no score 1-10: %r", reply[:80])
    return score


def judge_scores(url: str, model: str, references: list[str], candidates: list[str],
                 api_key_env: str | None = None) -> dict:
    """Mean judge score over the pairs that got one; failures counted, not scored."""
    api_key = os.environ.get(api_key_env) if api_key_env else None
    scores = [judge_one(url, model, r, c, api_key) for r, c in zip(references, candidates, strict=True)]
    got = [s for s in scores if s is not None]
    return {"judge_score": statistics.fmean(got) if got else None, "judge_scored": len(got),
            "judge_failed": len(scores) - len(got), "judge_model": model}
