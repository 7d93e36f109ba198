"""The scoring table: one row per test face, with explicit masks of what each row can be scored
on, from which eval's corpus metrics and the bootstrap's resamples are both summed.

    table = score_table(samples, completions, "fea")
    corpus_metrics(table, np.ones((1, table.n)))   # eval's numbers
    corpus_metrics(table, weights)                 # (R, N) resample counts: the bootstrap's

Masks: `has_aus` (AUs not null: AU F1 counts the row), `labelled` (a first label inside the
protocol's classes: accuracy counts it; `label_outside` one outside), `has_description`
(ROUGE-L counts it). Format validity counts every row. Emotion macro-F1 is over the protocol's
classes (a class neither true nor predicted in a resample counts 0, as metrics.emotion_metrics);
`cited_per_gold` is the AUs cited over the AUs true, on the rows with AUs (1.0: as many as gold). A protocol without an AU task or an
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
METRICS = ("au_f1", "accuracy", "emotion_f1", "rouge_l", "format_rate", "cited_per_gold")
RATIOS = ("cited_per_gold",)  # reported as ratios, the rest in percent


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
    gold_class: np.ndarray  # (N,) index into `classes` (-1 where not labelled)
    pred_class: np.ndarray  # (N,) index into `classes` of the answer (-1: none of them)
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
                stem: bool = True, classes: Sequence[str] | None = None) -> ScoreTable:
    """The table of `completions` against the samples' AUs, labels and descriptions. `classes`
    narrows the protocol's emotions to those a test set has (macro-F1 then runs over them; an
    answer outside them is wrong)."""
    au_subset, protocol_classes = check_protocol(protocol)
    if classes is not None and not set(classes) <= set(protocol_classes or ()):
        raise FacialR1Error(f"classes {sorted(set(classes) - set(protocol_classes or ()))} are not among "
                            f"protocol {protocol}'s emotions")
    aus, classes = tuple(au_subset or ()), tuple((protocol_classes or ()) if classes is None else classes)
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
    index = {c: i for i, c in enumerate(classes)}
    gold_class = np.array([index[f] if lab else -1 for f, lab in zip(first, labelled, strict=True)], dtype=np.int64)
    pred_class = np.array([index.get(p.answer, -1) for p in parsed], dtype=np.int64)
    has_desc = np.array([bool(s["description"]) for s in samples], dtype=bool)
    refs = [(c, s["description"]) for c, s, d in zip(completions, samples, has_desc, strict=True) if d]
    rouge = np.zeros(n)
    rouge[has_desc] = rouge_l_each([c for c, _ in refs], [r for _, r in refs], stem)
    return ScoreTable([s.get("id", str(i)) for i, s in enumerate(samples)], parsed, aus, classes, has_aus, pred, gold, labelled, outside,
                      correct, gold_class, pred_class, has_desc, rouge,
                      np.array([p.format_valid for p in parsed], dtype=float))


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
    cited = weights @ (table.pred.sum(1) * table.has_aus)
    true = weights @ table.gold.sum(1)
    return {"au_f1": au_f1,
            "accuracy": _mean(weights, table.correct, table.labelled),
            "emotion_f1": _macro_f1(table, weights),
            "rouge_l": _mean(weights, table.rouge, table.has_description),
            "format_rate": _mean(weights, table.valid, np.ones(table.n, dtype=bool)),
            "cited_per_gold": np.divide(cited, true, out=np.full(len(weights), np.nan), where=true > 0)}


def _macro_f1(table: ScoreTable, weights: np.ndarray) -> np.ndarray:
    """Emotion macro-F1 over the protocol's classes on the labelled rows of each resample."""
    out = np.full(len(weights), np.nan)
    if not table.classes:
        return out
    labelled = table.labelled.astype(float)
    f1 = np.zeros((len(weights), len(table.classes)))
    for c in range(len(table.classes)):
        gold, pred = (table.gold_class == c) * labelled, (table.pred_class == c) * labelled
        tp, support, predicted = weights @ (gold * pred), weights @ gold, weights @ pred
        np.divide(2 * tp, support + predicted, out=f1[:, c], where=support + predicted > 0)
    count = weights @ labelled
    np.copyto(out, f1.mean(1), where=count > 0)
    return out


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


# Sampled metrics of a fixed subset of faces, k completions each at the training temperature
# (what GRPO optimises), per face; NaN where the face has no label (accuracy) or no AUs.
SAMPLED = ("mean_acc", "maj_acc", "pass_acc", "pass_acc_shuffled", "mean_au_f1")


@dataclass
class SampledTable:
    ids: list[str]
    k: int
    values: dict[str, np.ndarray]  # SAMPLED name -> (N,) per-face value


def sampled_table(samples: Sequence[dict], completions: Sequence[Sequence[str]], protocol: str = "fea",
                  seed: int = 0) -> SampledTable:
    """Per face, over its k completions: mean@k accuracy (the share correct), maj@k (the most
    frequent answer, ties to the first drawn, is right), pass@k (any is right), pass@k against
    a face-shuffled labelling (each face's gold is another face's: the floor that guessing from
    the label marginals gets), and the mean per-face AU set-F1 (the AU reward). A label outside
    the protocol's classes is not scored."""
    from collections import Counter

    from facial_r1.rewards import set_f1

    aus, classes = (tuple(x or ()) for x in check_protocol(protocol))
    n = len(samples)
    gold = [s["labels"][0] if s["labels"] and s["labels"][0] in classes else None for s in samples]
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [None] * n  # a derangement: face order[i] gets the label of face order[i + 1]
    for i in range(n):
        shuffled[order[i]] = gold[order[(i + 1) % n]] if n > 1 else None
    values = {k: np.full(n, np.nan) for k in SAMPLED}
    k = len(completions[0]) if n else 0
    for i, (sample, texts) in enumerate(zip(samples, completions, strict=True)):
        parsed = [parse_completion(t) for t in texts]
        answers = [a.answer for a in parsed]
        if gold[i] is not None:
            hits = [a == gold[i] for a in answers]
            values["mean_acc"][i] = float(np.mean(hits))
            values["maj_acc"][i] = float(Counter(answers).most_common(1)[0][0] == gold[i])
            values["pass_acc"][i] = float(any(hits))
        if shuffled[i] is not None:
            values["pass_acc_shuffled"][i] = float(shuffled[i] in answers)
        if aus and sample["AUs"] is not None:
            true = set(sample["AUs"]) & set(aus)
            values["mean_au_f1"][i] = float(np.mean([set_f1(set(a.aus) & set(aus), true) for a in parsed]))
    return SampledTable([s.get("id", str(i)) for i, s in enumerate(samples)], k, values)


def read_sampled(test: str, path: str, protocol: str) -> SampledTable:
    """The sampled table of an eval's `samples.jsonl` ({"id", "completions"} per face)."""
    import json
    from pathlib import Path

    from facial_r1.data.schema import read_jsonl

    samples = {s["id"]: s for s in read_jsonl(test)}
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return sampled_table([samples[r["id"]] for r in records], [r["completions"] for r in records], protocol)
