"""Bootstrap confidence intervals for the corpus metrics, and paired differences between two
models scored on the same faces.

    faces = face_table(samples, completions, protocol)      # per-face counts, once per model
    ci = bootstrap(faces, n=1000, seed=0)                   # {metric: (value, low, high)}
    diff = paired_difference(faces_b, faces_a, seed=0)      # b - a, same resampled faces

Every resample draws faces with replacement; a corpus metric (macro AU F1 over the
protocol's AUs, accuracy, ROUGE-L, format rate) is recomputed on it from per-face counts, so
AU F1 stays the benchmark's corpus-level F1, not a mean of per-face scores. Paired: both
models are scored on the *same* resample each time, which removes the between-face variance
that two separate CIs would count twice. Intervals are percentile intervals (2.5 %, 97.5 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facial_r1.evaluate import PROTOCOLS
from facial_r1.metrics import rouge_l_each
from facial_r1.parse import parse_completion

METRICS = ("au_f1", "accuracy", "rouge_l", "format_rate")


@dataclass
class FaceTable:
    """Per-face numbers from which every corpus metric of a resample is summed."""

    ids: list[str]
    tp: np.ndarray  # (N, AUs) 1 where the AU is cited and true
    fp: np.ndarray  # (N, AUs)
    fn: np.ndarray  # (N, AUs)
    correct: np.ndarray  # (N,) emotion answer equals the label
    rouge: np.ndarray  # (N,) ROUGE-L F against the reference description
    valid: np.ndarray  # (N,) format valid


def face_table(samples: list[dict], completions: list[str], protocol: str = "synfacs") -> FaceTable:
    """Per-face counts for `protocol` (every sample needs AUs, a label and a description)."""
    aus, _ = PROTOCOLS[protocol]
    parsed = [parse_completion(c) for c in completions]
    pred = np.array([[a in p.aus for a in aus] for p in parsed], dtype=np.int64).reshape(len(parsed), len(aus))
    gold = np.array([[a in s["AUs"] for a in aus] for s in samples], dtype=np.int64).reshape(len(samples), len(aus))
    return FaceTable(
        ids=[s["id"] for s in samples],
        tp=pred & gold, fp=pred & (1 - gold), fn=(1 - pred) & gold,
        correct=np.array([p.answer == s["labels"][0] for p, s in zip(parsed, samples, strict=True)], dtype=float),
        rouge=np.array(rouge_l_each(completions, [s["description"] for s in samples])),
        valid=np.array([p.format_valid for p in parsed], dtype=float),
    )


def corpus_metrics(faces: FaceTable, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of resamples given as count weights (R, N): weight = times a face was drawn."""
    tp, fp, fn = weights @ faces.tp, weights @ faces.fp, weights @ faces.fn  # (R, AUs)
    denom = 2 * tp + fp + fn
    per_au = np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=denom > 0)
    present = (tp + fn) > 0  # the mean runs over AUs with a gold positive, as in metrics.au_metrics
    au_f1 = np.divide((per_au * present).sum(1), present.sum(1), out=np.zeros(len(tp)), where=present.sum(1) > 0)
    n = weights.sum(1)
    return {"au_f1": au_f1, "accuracy": weights @ faces.correct / n, "rouge_l": weights @ faces.rouge / n,
            "format_rate": weights @ faces.valid / n}


def resample_weights(n_faces: int, n: int = 1000, seed: int = 0) -> np.ndarray:
    """(n, n_faces) counts: how often each face is drawn in each of n bootstrap resamples."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_faces, np.full(n_faces, 1 / n_faces), size=n).astype(float)


def bootstrap(faces: FaceTable, n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """{metric: [value on all faces, 2.5 % bound, 97.5 % bound]}."""
    full = corpus_metrics(faces, np.ones((1, len(faces.ids))))
    boot = corpus_metrics(faces, resample_weights(len(faces.ids), n, seed))
    return {k: [float(full[k][0]), *map(float, np.percentile(boot[k], [2.5, 97.5]))] for k in METRICS}


def paired_difference(b: FaceTable, a: FaceTable, n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """{metric: [b - a on all faces, 2.5 %, 97.5 %]}, both scored on the same resampled faces."""
    if b.ids != a.ids:
        raise ValueError("paired difference needs the same faces in the same order")
    weights = resample_weights(len(a.ids), n, seed)
    full = np.ones((1, len(a.ids)))
    fb, fa, bb, ba = corpus_metrics(b, full), corpus_metrics(a, full), corpus_metrics(b, weights), corpus_metrics(a, weights)
    return {k: [float(fb[k][0] - fa[k][0]), *map(float, np.percentile(bb[k] - ba[k], [2.5, 97.5]))] for k in METRICS}
