"""Bootstrap CIs and paired differences, checked against `evaluate.score` on the same resamples."""

import numpy as np
import pytest

from facial_r1 import evaluate, stats


def sample(i, aus, label):
    return {"id": f"f{i}", "AUs": aus, "labels": [label], "description": f"<think>brows ({aus[0]})</think><answer>{label}</answer>"}


SAMPLES = [sample(0, ["AU1", "AU2"], "Surprise"), sample(1, ["AU4"], "Anger"), sample(2, ["AU12"], "Happiness"),
           sample(3, ["AU1", "AU4", "AU15"], "Sadness"), sample(4, ["AU12", "AU6"], "Happiness")]
A = ["<think>brows (AU1) (AU2)</think><answer>Surprise</answer>",  # exact
     "<think>brows (AU4)</think><answer>Fear</answer>",  # AUs right, emotion wrong
     "<think>(AU12) (AU25)</think><answer>Happiness</answer>",  # one extra AU
     "no tags at all",  # format broken: nothing cited, no answer
     "<think>(AU6)</think><answer>Happiness</answer>"]  # one AU missed
B = ["<think>brows (AU1) (AU2)</think><answer>Surprise</answer>"] * 5


def direct(samples, completions):
    m = evaluate.score(samples, completions, "synfacs")
    return {k: m[k] for k in stats.METRICS}


def test_full_sample_value_equals_evaluate_score():
    ci = stats.bootstrap(stats.face_table(SAMPLES, A, "synfacs"), n=50, seed=0)
    for k, v in direct(SAMPLES, A).items():
        assert ci[k][0] == pytest.approx(v), k
        assert ci[k][1] <= ci[k][2]
    # hand-computed: accuracy 3/5 (faces 0, 2, 4), format 4/5
    assert (ci["accuracy"][0], ci["format_rate"][0]) == (pytest.approx(0.6), pytest.approx(0.8))


def test_each_resample_equals_score_of_the_resampled_faces():
    faces = stats.face_table(SAMPLES, A, "synfacs")
    weights = stats.resample_weights(len(SAMPLES), n=20, seed=3)
    got = stats.corpus_metrics(faces, weights)
    for r, w in enumerate(weights):
        idx = [i for i, c in enumerate(w.astype(int)) for _ in range(c)]  # face i drawn c times
        want = direct([SAMPLES[i] for i in idx], [A[i] for i in idx])
        for k in stats.METRICS:
            assert got[k][r] == pytest.approx(want[k]), (r, k)


def test_percentile_bounds_are_those_of_the_resample_distribution():
    faces = stats.face_table(SAMPLES, A, "synfacs")
    boot = stats.corpus_metrics(faces, stats.resample_weights(5, 400, seed=7))
    ci = stats.bootstrap(faces, n=400, seed=7)
    assert ci["accuracy"][1:] == pytest.approx(list(np.percentile(boot["accuracy"], [2.5, 97.5])))


def test_paired_difference_resamples_the_same_faces():
    fa, fb = stats.face_table(SAMPLES, A, "synfacs"), stats.face_table(SAMPLES, B, "synfacs")
    d = stats.paired_difference(fa, fa, n=200, seed=0)
    assert all(d[k] == [0.0, 0.0, 0.0] for k in stats.METRICS)  # same model: zero on every resample
    d = stats.paired_difference(fb, fa, n=200, seed=0)
    assert d["accuracy"][0] == pytest.approx(direct(SAMPLES, B)["accuracy"] - 0.6)
    weights = stats.resample_weights(5, 200, seed=0)
    want = stats.corpus_metrics(fb, weights)["au_f1"] - stats.corpus_metrics(fa, weights)["au_f1"]
    assert d["au_f1"][1:] == pytest.approx(list(np.percentile(want, [2.5, 97.5])))


def test_paired_difference_refuses_other_faces():
    fa = stats.face_table(SAMPLES, A, "synfacs")
    fb = stats.face_table(SAMPLES[::-1], A[::-1], "synfacs")
    with pytest.raises(ValueError, match="same faces"):
        stats.paired_difference(fb, fa)
