"""Bootstrap CIs and paired differences, checked against `evaluate.score` on the same resamples."""

import numpy as np
import pytest

from facial_r1 import evaluate, stats
from facial_r1.scoring import corpus_metrics, score_table


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
    ci = stats.bootstrap(score_table(SAMPLES, A, "synfacs"), n=50, seed=0)
    for k, v in direct(SAMPLES, A).items():
        assert ci[k][0] == pytest.approx(v), k
        assert ci[k][1] <= ci[k][2]
    # hand-computed: accuracy 3/5 (faces 0, 2, 4), format 4/5
    assert (ci["accuracy"][0], ci["format_rate"][0]) == (pytest.approx(0.6), pytest.approx(0.8))


def test_each_resample_equals_score_of_the_resampled_faces():
    faces = score_table(SAMPLES, A, "synfacs")
    weights = stats.resample_weights(len(SAMPLES), n=20, seed=3)
    got = corpus_metrics(faces, weights)
    for r, w in enumerate(weights):
        idx = [i for i, c in enumerate(w.astype(int)) for _ in range(c)]  # face i drawn c times
        want = direct([SAMPLES[i] for i in idx], [A[i] for i in idx])
        for k in stats.METRICS:
            assert got[k][r] == pytest.approx(want[k]), (r, k)


def test_percentile_bounds_are_those_of_the_resample_distribution():
    faces = score_table(SAMPLES, A, "synfacs")
    boot = corpus_metrics(faces, stats.resample_weights(5, 400, seed=7))
    ci = stats.bootstrap(faces, n=400, seed=7)
    assert ci["accuracy"][1:] == pytest.approx(list(np.percentile(boot["accuracy"], [2.5, 97.5])))


def test_paired_difference_resamples_the_same_faces():
    fa, fb = score_table(SAMPLES, A, "synfacs"), score_table(SAMPLES, B, "synfacs")
    d = stats.paired_difference(fa, fa, n=200, seed=0)
    assert all(d[k] == [0.0, 0.0, 0.0] for k in stats.METRICS)  # same model: zero on every resample
    d = stats.paired_difference(fb, fa, n=200, seed=0)
    assert d["accuracy"][0] == pytest.approx(direct(SAMPLES, B)["accuracy"] - 0.6)
    weights = stats.resample_weights(5, 200, seed=0)
    want = corpus_metrics(fb, weights)["au_f1"] - corpus_metrics(fa, weights)["au_f1"]
    assert d["au_f1"][1:] == pytest.approx(list(np.percentile(want, [2.5, 97.5])))


def test_paired_difference_refuses_other_faces():
    fa = score_table(SAMPLES, A, "synfacs")
    fb = score_table(SAMPLES[::-1], A[::-1], "synfacs")
    with pytest.raises(ValueError, match="same faces"):
        stats.paired_difference(fb, fa)


# A partly labelled test set, as real benchmark files are: one row per kind of gap.
PARTIAL = [
    sample(0, ["AU1", "AU2"], "Surprise"),                                    # fully labelled
    {**sample(1, ["AU4"], "Anger"), "AUs": None},                             # no AU labels (an emotion-only set)
    {**sample(2, ["AU12"], "Happiness"), "labels": []},                       # no emotion label (an AU-only set)
    {**sample(3, ["AU1", "AU4", "AU15"], "Sadness"), "description": "",      # no reference reasoning; two
     "labels": ["Sadness", "Fear"]},                                            # labels: the first is the emotion
    {**sample(4, ["AU12", "AU6"], "Happiness"), "labels": ["Contempt"]},      # a label outside the 7-class protocol
]
PARTIAL_PRED = [
    "<think>(AU1) (AU2)</think><answer>Surprise</answer>",
    "<think>(AU4)</think><answer>Anger</answer>",
    "<think>(AU12)</think><answer>Happiness</answer>",
    "<think>(AU1) (AU4)</think><answer>Fear</answer>",
    "<think>(AU12) (AU6)</think><answer>Contempt</answer>",
]


@pytest.mark.parametrize("protocol, expected", [
    # AU rows 0, 2, 3, 4 (row 1 has none): per-AU F1 over AU1 1, AU2 1, AU4 1, AU6 1, AU12 1, AU15 0 -> 5/6;
    # emotion rows 0, 1, 3, 4 (row 2 has no label): 3 of 4 right (row 3 answers Fear) -> 0.75; ROUGE all but 3
    ("fea", {"au_f1": 5 / 6, "accuracy": 0.75, "format_rate": 1.0}),
    # the 7-class protocol drops row 4's Contempt from accuracy: rows 0, 1, 3 -> 2 of 3
    ("affectnet7", {"au_f1": None, "accuracy": 2 / 3, "format_rate": 1.0}),
    # an AU-only protocol scores no emotion
    ("disfa", {"accuracy": None, "format_rate": 1.0}),
])
def test_a_partly_labelled_test_set_scores_each_task_on_its_rows(protocol, expected):
    table = score_table(PARTIAL, PARTIAL_PRED, protocol)
    ci = stats.bootstrap(table, n=200, seed=0)
    metrics = evaluate.score(PARTIAL, PARTIAL_PRED, protocol)
    for key, want in expected.items():
        if want is None:
            assert ci[key] is None and key not in metrics, key
        else:
            assert ci[key][0] == pytest.approx(want) and metrics[key] == pytest.approx(want), key
            assert ci[key][1] <= ci[key][0] <= ci[key][2]
    assert ci["rouge_l"][0] == pytest.approx(metrics["rouge_l"])  # both over the 4 rows with a description
    assert metrics["n_description"] == 4
    if protocol == "affectnet7":
        assert metrics["label_outside_protocol"] == 1 and metrics["n_emotion"] == 3


def test_the_pipeline_report_takes_a_partly_labelled_test_set(tmp_path):
    from facial_r1 import report

    a, b = score_table(PARTIAL, PARTIAL_PRED, "fea"), score_table(PARTIAL, B, "fea")
    rows = [(report.Row(report.Role.SFT, "SFT"), a), (report.Row(report.Role.GRPO, "+ GRPO"), b)]
    result = report.summarize(rows, 100, 0)
    assert [r["stage"] for r in result["rows"]] == ["SFT", "+ GRPO"]
    assert result["rows"][0]["accuracy"][0] == pytest.approx(0.75)
    report.write_report(tmp_path, result, [], {}, 1.0, 1.0)
    assert "| SFT | 83.3 [" in (tmp_path / "report.md").read_text()


def test_sampled_table_hand_computed():
    """3 completions per face: mean@3, maj@3, pass@3, pass@3 on a face-shuffled labelling, mean AU set-F1."""
    from facial_r1.scoring import sampled_table

    samples = [sample(0, ["AU1", "AU2"], "Surprise"), sample(1, ["AU4"], "Anger"), sample(2, ["AU12"], "Happiness")]
    def t(aus, answer):
        return "<think>" + " ".join(f"({a})" for a in aus) + f"</think><answer>{answer}</answer>"
    completions = [[t(["AU1", "AU2"], "Surprise"), t(["AU1"], "Fear"), t([], "Surprise")],   # 2 of 3 right
                   [t(["AU4"], "Fear"), t(["AU4"], "Fear"), t(["AU4"], "Anger")],             # right once, majority wrong
                   [t(["AU12"], "Sadness"), t(["AU12"], "Anger"), t(["AU12"], "Fear")]]       # never right
    table = sampled_table(samples, completions, "synfacs", seed=0)
    v = table.values
    assert table.k == 3
    assert list(v["mean_acc"]) == pytest.approx([2 / 3, 1 / 3, 0])
    assert list(v["maj_acc"]) == [1, 0, 0] and list(v["pass_acc"]) == [1, 1, 0]
    assert list(v["mean_au_f1"]) == pytest.approx([(1 + 2 / 3 + 0) / 3, 1, 1])
    # the shuffled labelling is a derangement: each face is judged by another face's emotion
    order = np.random.default_rng(0).permutation(3)
    gold = ["Surprise", "Anger", "Happiness"]
    shuffled = {int(order[i]): gold[order[(i + 1) % 3]] for i in range(3)}
    assert all(shuffled[i] != gold[i] for i in range(3))
    want = [float(any(f"<answer>{shuffled[i]}</answer>" in c for c in completions[i])) for i in range(3)]
    assert list(v["pass_acc_shuffled"]) == want
    ci = stats.bootstrap_means(v, n=200, seed=0)
    assert ci["pass_acc"][0] == pytest.approx(2 / 3) and ci["pass_acc"][1] <= 2 / 3 <= ci["pass_acc"][2]
    d = stats.paired_means(v, v, n=50, seed=0)
    assert all(d[k] == [0.0, 0.0, 0.0] for k in v)


def test_report_pairs_rows_by_role():
    """Controls against SFT; GRPO against SFT, the same-steps control and the shuffled-reward
    control; a round against the row before it. Sampled differences only where both rows sampled."""
    from facial_r1 import report
    from facial_r1.scoring import sampled_table

    t = score_table(SAMPLES, A, "synfacs")
    R = report.Row
    sft, control = R(report.Role.SFT, "SFT"), R(report.Role.CONTROL, "control")
    shuffled, grpo = R(report.Role.SHUFFLED, "shuffled"), R(report.Role.GRPO, "GRPO")
    round1 = R(report.Role.ROUND, "round 1", 1)
    s = sampled_table(SAMPLES, [[a] * 2 for a in A], "synfacs")
    result = report.summarize([(sft, t), (control, t), (shuffled, t), (grpo, t), (round1, t)], 20, 0,
                              {sft: s, grpo: s, shuffled: s})
    assert [(d["stage"], d["vs"], "sampled" in d) for d in result["diffs"]] == [
        ("control", "SFT", False), ("shuffled", "SFT", True), ("GRPO", "SFT", True), ("GRPO", "control", False),
        ("GRPO", "shuffled", True), ("round 1", "GRPO", False)]
    assert [("sampled" in r) for r in result["rows"]] == [True, False, True, True, False]
