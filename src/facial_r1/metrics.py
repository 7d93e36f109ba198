"""Corpus-level metrics as the FEA benchmarks report them.

- AU F1: binary F1 per AU over the test set, then the unweighted mean over the benchmark's
  AU subset (DISFA 8 AUs, BP4D 12, FABA 12); micro F1 pools all (sample, AU) decisions.
- Emotion: accuracy, macro-F1, UAR (unweighted average recall), confusion matrix.
- ROUGE-L F via the rouge-score package.
- REGE (FABA-Bench / EmoLA): recognition score x100 + ROUGE-L F x100.
"""

from __future__ import annotations

from collections.abc import Sequence

from rouge_score import rouge_scorer


def per_au_f1(pred: Sequence[set[str]], gold: Sequence[set[str]], aus: Sequence[str]) -> dict[str, float]:
    """Binary F1 of each AU over the corpus (0.0 when an AU has no positives at all)."""
    table = {}
    for au in aus:
        tp = sum(au in p and au in g for p, g in zip(pred, gold, strict=True))
        fp = sum(au in p and au not in g for p, g in zip(pred, gold, strict=True))
        fn = sum(au not in p and au in g for p, g in zip(pred, gold, strict=True))
        table[au] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return table


def au_metrics(pred: Sequence[set[str]], gold: Sequence[set[str]], aus: Sequence[str]) -> dict:
    """{'per_au': {AU: F1}, 'mean_f1': macro mean over `aus`, 'micro_f1': pooled F1}."""
    table = per_au_f1(pred, gold, aus)
    tp = sum(len(p & g & set(aus)) for p, g in zip(pred, gold, strict=True))
    n_pred = sum(len(p & set(aus)) for p in pred)
    n_gold = sum(len(g & set(aus)) for g in gold)
    micro = 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0
    mean = sum(table.values()) / len(table) if table else 0.0
    return {"per_au": table, "mean_f1": mean, "micro_f1": micro}


def emotion_metrics(pred: Sequence[str | None], gold: Sequence[str], classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and UAR over `classes`; a None prediction counts as wrong.

    The confusion matrix is rows = gold, columns = predicted, with an extra last column
    for predictions outside `classes` (missing or invalid answers).
    """
    index = {c: i for i, c in enumerate(classes)}
    confusion = [[0] * (len(classes) + 1) for _ in classes]
    for p, g in zip(pred, gold, strict=True):
        confusion[index[g]][index.get(p, len(classes))] += 1
    n = len(gold)
    correct = sum(confusion[i][i] for i in range(len(classes)))
    recalls, f1s = [], []
    for i in range(len(classes)):
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        tp = confusion[i][i]
        if support:
            recalls.append(tp / support)
        if support or predicted:
            f1s.append(2 * tp / (support + predicted))
    return {
        "accuracy": correct / n if n else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "uar": sum(recalls) / len(recalls) if recalls else 0.0,
        "confusion": confusion,
        "classes": list(classes),
    }


_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_each(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure of each pair (rouge-score's tokenizer, no stemming)."""
    return [_ROUGE.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure over pairs."""
    scores = rouge_l_each(predictions, references)
    return sum(scores) / len(scores) if scores else 0.0


def rege(recognition: float, rouge_l_f: float) -> float:
    """FABA-Bench REGE: recognition (accuracy or mean AU F1, in [0, 1]) x100 + ROUGE-L F x100.

    >>> rege(0.5, 0.25)
    75.0
    """
    return 100.0 * recognition + 100.0 * rouge_l_f
