"""The scoring table: one row per test face, with explicit masks of what each row can be scored
on, from which eval's corpus metrics and the bootstrap's resamples are both summed.

    table = score_table(samples, completions, "fea")
    corpus_metrics(table, np.ones((1, table.n)))   # eval's numbers
    corpus_metrics(table, weights)                 # (R, N) resample counts: the bootstrap's

Masks: `has_aus` (AUs not null: AU F1 counts the row), `labelled` (a first label inside the
protocol's classes: accuracy counts it; `label_outside` one outside), `has_description`
(ROUGE-L counts it). Format validity counts every row. A protocol without an AU task or an
emotion task scores none of it. AU F1 is the corpus F1 per AU over the AUs of the protocol's
subset with a gold positive, then their mean (metrics.py's convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facial_r1.data.synfacs import RENDERED_AUS
from facial_r1.errors import FacialR1Error
from facial_r1.facs import AU_SUBSETS, EMOTIONS, LABEL_ORDERS
from facial_r1.metrics import rouge_l_each
from facial_r1.parse import Analysis, parse_completion

_SEVEN = tuple(e for e in EMOTIONS if e != "Contempt")
# protocol -> (AU subset scored, emotion classes scored); None = that task is not scored.
PROTOCOLS: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...] | None]] = {
    "disfa": (AU_SUBSETS["disfa"], None),
    "bp4d": (AU_SUBSETS["bp4d"], None),
    "rafau": (AU_SUBSETS["all"], None),
    "faba": (AU_SUBSETS["faba"], EMOTIONS),
    "fer2013": (None, tuple(LABEL_ORDERS["fer2013"].values())),
    "affectnet7": (None, _SEVEN),
    "affectnet8": (None, EMOTIONS),
    "rafdb": (None, tuple(LABEL_ORDERS["rafdb"].values())),
    "fea": (AU_SUBSETS["all"], EMOTIONS),
    "synfacs": (RENDERED_AUS, EMOTIONS),
}
METRICS = ("au_f1", "accuracy", "rouge_l", "format_rate")


@dataclass
class ScoreTable:
    ids: list[str]
    parsed: list[Analysis]
    aus: tuple[str, ...]  # the protocol's AU subset (empty: no AU task)
    classes: tuple[str, ...]  # the protocol's emotions (empty: no emotion task)
    has_aus: np.ndarray  # (N,) bool
    pred: np.ndarray  # (N, A) 0/1: AU cited
    gold: np.ndarray  # (N, A) 0/1: AU true (0 where has_aus is False)
    labelled: np.ndarray  # (N,) bool: first label inside `classes`
    label_outside: np.ndarray  # (N,) bool: a first label outside `classes`
    correct: np.ndarray  # (N,) 0/1 (0 where not labelled)
    has_description: np.ndarray  # (N,) bool
    rouge: np.ndarray  # (N,) ROUGE-L F against the description (0 where there is none)
    valid: np.ndarray  # (N,) 0/1 format valid

    @property
    def n(self) -> int:
        return len(self.ids)

    def counts(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, fn), each (R, A), of resamples given as count weights (R, N), rows with AUs only."""
        pred, gold = self.pred * self.has_aus[:, None], self.gold
        return weights @ (pred & gold), weights @ (pred & (1 - gold)), weights @ ((1 - pred) & gold)


def check_protocol(protocol: str) -> tuple:
    if protocol not in PROTOCOLS:
        raise FacialR1Error(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def score_table(samples: Sequence[dict], completions: Sequence[str], protocol: str = "fea",
                stem: bool = True) -> ScoreTable:
    """The table of `completions` against the samples' AUs, labels and descriptions."""
    au_subset, classes = check_protocol(protocol)
    aus, classes = tuple(au_subset or ()), tuple(classes or ())
    parsed = [parse_completion(c) for c in completions]
    n = len(samples)
    has_aus = np.array([bool(aus) and s["AUs"] is not None for s in samples], dtype=bool)
    pred = np.array([[a in p.aus for a in aus] for p in parsed], dtype=np.int64).reshape(n, len(aus))
    gold = np.array([[bool(h) and a in (s["AUs"] or ()) for a in aus] for s, h in zip(samples, has_aus, strict=True)],
                    dtype=np.int64).reshape(n, len(aus))
    first = [s["labels"][0] if s["labels"] else None for s in samples]
    labelled = np.array([bool(classes) and f in classes for f in first], dtype=bool)
    outside = np.array([bool(classes) and f is not None and f not in classes for f in first], dtype=bool)
    correct = np.array([lab and p.answer == f for p, f, lab in zip(parsed, first, labelled, strict=True)], dtype=float)
    has_desc = np.array([bool(s["description"]) for s in samples], dtype=bool)
    refs = [(c, s["description"]) for c, s, d in zip(completions, samples, has_desc, strict=True) if d]
    rouge = np.zeros(n)
    rouge[has_desc] = rouge_l_each([c for c, _ in refs], [r for _, r in refs], stem)
    return ScoreTable([s.get("id", str(i)) for i, s in enumerate(samples)], parsed, aus, classes, has_aus, pred, gold, labelled, outside,
                      correct, has_desc, rouge, np.array([p.format_valid for p in parsed], dtype=float))


def corpus_metrics(table: ScoreTable, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of resamples given as count weights (R, N); NaN where a resample has no row to
    score it on (or the protocol has no such task)."""
    tp, fp, fn = table.counts(weights)
    denom = 2 * tp + fp + fn
    per_au = np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=denom > 0)
    present = (tp + fn) > 0  # the mean runs over AUs with a gold positive
    n_present = present.sum(1)
    au_f1 = np.full(len(weights), np.nan)
    np.divide((per_au * present).sum(1), n_present, out=au_f1, where=n_present > 0)
    return {"au_f1": au_f1,
            "accuracy": _mean(weights, table.correct, table.labelled),
            "rouge_l": _mean(weights, table.rouge, table.has_description),
            "format_rate": _mean(weights, table.valid, np.ones(table.n, dtype=bool))}


def _mean(weights: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = weights @ mask.astype(float)
    out = np.full(len(weights), np.nan)
    np.divide(weights @ (values * mask), count, out=out, where=count > 0)
    return out


def full(table: ScoreTable) -> dict[str, float | None]:
    """Each metric on every row of the table (None where nothing is scored)."""
    values = corpus_metrics(table, np.ones((1, table.n)))
    return {k: None if np.isnan(v[0]) else float(v[0]) for k, v in values.items()}


def read_table(test: str, predictions: str, protocol: str) -> ScoreTable:
    """The table of an eval's `predictions.jsonl` against its test file (rows matched by id, in
    the predictions' order: eval writes the rows it scored)."""
    import json
    from pathlib import Path

    from facial_r1.data.schema import read_jsonl

    samples = {s["id"]: s for s in read_jsonl(test)}
    records = [json.loads(line) for line in Path(predictions).read_text().splitlines() if line.strip()]
    return score_table([samples[r["id"]] for r in records], [r["completion"] for r in records], protocol)
