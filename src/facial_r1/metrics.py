"""Corpus-level metrics in the literature's conventions.

- AU F1: binary F1 per AU over the test set (sklearn's `f1_score(average=None,
  zero_division=0)`), then the unweighted mean over the AUs of the benchmark's subset that have
  at least one gold positive in the test set, as Facial-R1's released eval does
  (src/eval/eval_emotion.py, `multilabel_metrics`: `f1_each[valid_mask].mean()`); the AUs left
  out are listed. Micro F1 pools all (sample, AU) decisions of the subset.
- Emotion: accuracy; macro-F1 over the protocol's classes as `f1_score(labels=classes,
  average="macro", zero_division=0)` computes it (a class with no support and no prediction
  counts 0); UAR over classes with support; confusion matrix.
- ROUGE-L F via rouge-score: its tokenizer lowercases and splits on non-alphanumerics (so the
  tags' words count as tokens), with the Porter stemmer by default, as the released eval runs it.
- REGE (FABA-Bench / EmoLA): recognition score x100 + ROUGE-L F x100, per task.
"""

from __future__ import annotations

from collections.abc import Sequence

from rouge_score import rouge_scorer


def per_au_f1(pred: Sequence[set[str]], gold: Sequence[set[str]], aus: Sequence[str]) -> dict[str, float]:
    """Binary F1 of each AU over the corpus (0.0 when it is undefined, as zero_division=0)."""
    table = {}
    for au in aus:
        tp = sum(au in p and au in g for p, g in zip(pred, gold, strict=True))
        fp = sum(au in p and au not in g for p, g in zip(pred, gold, strict=True))
        fn = sum(au not in p and au in g for p, g in zip(pred, gold, strict=True))
        table[au] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return table


def au_metrics(pred: Sequence[set[str]], gold: Sequence[set[str]], aus: Sequence[str]) -> dict:
    """{'per_au': {AU: F1} for the AUs of `aus` with a gold positive, 'mean_f1': their mean,
    'excluded_aus': the AUs of `aus` without one, 'micro_f1': pooled F1 over `aus`}.

    >>> m = au_metrics([{"AU1"}, {"AU2"}], [{"AU1"}, set()], ["AU1", "AU2", "AU4"])
    >>> m["per_au"], m["mean_f1"], m["excluded_aus"]
    ({'AU1': 1.0}, 1.0, ['AU2', 'AU4'])
    """
    present = [au for au in aus if any(au in g for g in gold)]
    table = per_au_f1(pred, gold, present)
    tp = sum(len(p & g & set(aus)) for p, g in zip(pred, gold, strict=True))
    n_pred = sum(len(p & set(aus)) for p in pred)
    n_gold = sum(len(g & set(aus)) for g in gold)
    micro = 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0
    mean = sum(table.values()) / len(table) if table else 0.0
    return {"per_au": table, "mean_f1": mean, "micro_f1": micro,
            "excluded_aus": [au for au in aus if au not in table]}


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
        f1s.append(2 * tp / (support + predicted) if support + predicted else 0.0)
    return {
        "accuracy": correct / n if n else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "uar": sum(recalls) / len(recalls) if recalls else 0.0,
        "confusion": confusion,
        "classes": list(classes),
    }


_ROUGE = {stem: rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem) for stem in (True, False)}


def rouge_l_each(predictions: Sequence[str], references: Sequence[str], stem: bool = True) -> list[float]:
    """ROUGE-L F-measure of each pair (rouge-score's tokenizer; Porter stemming unless `stem=False`).

    >>> rouge_l_each(["brows lowered"], ["brow lowering"]), rouge_l_each(["brows lowered"], ["brow lowering"], stem=False)
    ([1.0], [0.0])
    """
    scorer = _ROUGE[stem]
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]


def rouge_l(predictions: Sequence[str], references: Sequence[str], stem: bool = True) -> float:
    """Mean ROUGE-L F-measure over pairs."""
    scores = rouge_l_each(predictions, references, stem)
    return sum(scores) / len(scores) if scores else 0.0


def rege(recognition: float, rouge_l_f: float) -> float:
    """FABA-Bench REGE: recognition (accuracy or mean AU F1, in [0, 1]) x100 + ROUGE-L F x100.

    >>> rege(0.5, 0.25)
    75.0
    """
    return 100.0 * recognition + 100.0 * rouge_l_f
