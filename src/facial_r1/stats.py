"""Bootstrap statistics of the corpus metrics: a confidence interval per model, a paired
difference between two models scored on the same faces.

    table = scoring.score_table(samples, completions, protocol)   # once per model
    ci = bootstrap(table, n=1000, seed=0)                           # {metric: [value, low, high]}
    diff = paired_difference(table_b, table_a, seed=0)              # b - a, same resampled faces

Every resample draws faces with replacement; a corpus metric (macro AU F1 over the protocol's
AUs, accuracy, ROUGE-L, format rate) is recomputed on it from the scoring table's per-face
counts and masks, the same table eval's numbers come from, so AU F1 stays the benchmark's
corpus-level F1 and a face without AUs or a label counts only where it can be scored. Paired:
both models are scored on the *same* resample each time, which removes the between-face
variance that two separate CIs would count twice. Intervals are percentile intervals (2.5 %,
97.5 %) over the resamples that can score the metric; a metric nothing scores is None.
"""

from __future__ import annotations

import numpy as np

from facial_r1.scoring import METRICS, ScoreTable, corpus_metrics

__all__ = ["METRICS", "bootstrap", "bootstrap_means", "paired_difference", "paired_means", "resample_weights"]


def resample_weights(n_faces: int, n: int = 1000, seed: int = 0) -> np.ndarray:
    """(n, n_faces) counts: how often each face is drawn in each of n bootstrap resamples."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_faces, np.full(n_faces, 1 / n_faces), size=n).astype(float)


def _interval(value: float, draws: np.ndarray) -> list[float] | None:
    if np.isnan(value):
        return None
    draws = draws[~np.isnan(draws)]
    if not len(draws):
        return [float(value), float(value), float(value)]
    return [float(value), *map(float, np.percentile(draws, [2.5, 97.5]))]


def bootstrap(table: ScoreTable, n: int = 1000, seed: int = 0) -> dict[str, list[float] | None]:
    """{metric: [value on all faces, 2.5 % bound, 97.5 % bound]}, None where nothing is scored."""
    full = corpus_metrics(table, np.ones((1, table.n)))
    boot = corpus_metrics(table, resample_weights(table.n, n, seed))
    return {k: _interval(full[k][0], boot[k]) for k in METRICS}


def paired_difference(b: ScoreTable, a: ScoreTable, n: int = 1000, seed: int = 0) -> dict[str, list[float] | None]:
    """{metric: [b - a on all faces, 2.5 %, 97.5 %]}, both scored on the same resampled faces."""
    if b.ids != a.ids:
        raise ValueError("paired difference needs the same faces in the same order")
    weights = resample_weights(a.n, n, seed)
    ones = np.ones((1, a.n))
    fb, fa, bb, ba = corpus_metrics(b, ones), corpus_metrics(a, ones), corpus_metrics(b, weights), corpus_metrics(a, weights)
    return {k: _interval(fb[k][0] - fa[k][0], bb[k] - ba[k]) for k in METRICS}


def _means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each resample's mean of per-face values (NaN: the face is not scored), NaN if none is."""
    scored = ~np.isnan(values)
    count = weights @ scored
    out = np.full(len(weights), np.nan)
    np.divide(weights @ np.where(scored, values, 0.0), count, out=out, where=count > 0)
    return out


def bootstrap_means(values: dict[str, np.ndarray], n: int = 1000, seed: int = 0) -> dict[str, list[float] | None]:
    """{name: [mean over the scored faces, 2.5 %, 97.5 %]} of per-face values (a sampled table's)."""
    size = len(next(iter(values.values()))) if values else 0
    weights, ones = resample_weights(size, n, seed), np.ones((1, size))
    return {k: _interval(_means(v, ones)[0], _means(v, weights)) for k, v in values.items()}


def paired_means(b: dict[str, np.ndarray], a: dict[str, np.ndarray], n: int = 1000,
                 seed: int = 0) -> dict[str, list[float] | None]:
    """{name: [b - a, 2.5 %, 97.5 %]}: per-face values of two models on the same faces, resampled together."""
    size = len(next(iter(a.values()))) if a else 0
    weights, ones = resample_weights(size, n, seed), np.ones((1, size))
    return {k: _interval(_means(b[k], ones)[0] - _means(a[k], ones)[0], _means(b[k], weights) - _means(a[k], weights))
            for k in a}
