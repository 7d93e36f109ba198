import pytest

from facial_r1.evaluate import score
from facial_r1.scoring import PROTOCOLS
from facial_r1.errors import FacialR1Error
from facial_r1.facs import AU_SUBSETS

SAMPLES = [
    {"AUs": ["AU1", "AU12"], "labels": ["Happiness"], "description": "<think>x (AU1)</think><answer>Happiness</answer>"},
    {"AUs": ["AU4"], "labels": ["Contempt"], "description": ""},
    {"AUs": None, "labels": ["Sadness"], "description": ""},
]
COMPLETIONS = [
    "<think>inner brows up (AU1), smile (AU12)</think><answer>Happiness</answer>",  # all right
    "<think>brows down (AU4), nose wrinkled (AU9)</think><answer>Contempt</answer>",  # AU9 extra
    "<think>nothing</think><answer>Anger</answer>",                                 # wrong emotion
]


PRESENT = ("AU1", "AU4", "AU12")  # the AUs with a gold positive in SAMPLES


@pytest.mark.parametrize("protocol, au_subset, accuracy", [
    # per-AU F1 only over the subset's AUs with a gold positive (AU1, AU4, AU12 where listed)
    ("disfa", AU_SUBSETS["disfa"], None),
    ("bp4d", AU_SUBSETS["bp4d"], None),
    ("rafau", None, None),                # every FACS AU, no emotion
    # 7 classes without Contempt: sample 2 is not scored -> 1 right of 2
    ("fer2013", (), 0.5),
    ("affectnet7", (), 0.5),
    ("rafdb", (), 0.5),
    # 8 classes: 2 right of 3
    ("affectnet8", (), 2 / 3),
    ("fea", None, 2 / 3),
    ("faba", AU_SUBSETS["faba"], 2 / 3),
    ("synfacs", None, 2 / 3),
])
def test_each_protocol_scores_its_subset(protocol, au_subset, accuracy):
    m = score(SAMPLES, COMPLETIONS, protocol)
    subset, classes = PROTOCOLS[protocol]
    if au_subset == ():
        assert "au_f1" not in m and subset is None
    else:
        scored = [au for au in (au_subset or subset) if au in PRESENT]
        assert list(m["au"]["per_au"]) == scored
        assert m["au"]["excluded_aus"] == [au for au in (au_subset or subset) if au not in PRESENT]
    if accuracy is None:
        assert "accuracy" not in m and classes is None
    else:
        assert m["accuracy"] == pytest.approx(accuracy)
    assert m["format_rate"] == 1.0


def test_disfa_mean_is_hand_computed():
    # AU1, AU4, AU12 cited exactly where true: F1 1 each. AU9 (a false positive) has no gold
    # positive, so it is left out of the mean, as the released eval leaves it (not a 0 pulling it down).
    m = score(SAMPLES, COMPLETIONS, "disfa")
    assert m["au_f1"] == pytest.approx(1.0) and m["au"]["per_au"] == {"AU1": 1.0, "AU4": 1.0, "AU12": 1.0}
    assert m["au"]["excluded_aus"] == ["AU2", "AU6", "AU9", "AU25", "AU26"]


def test_faba_rege_per_task():
    samples = [
        {"AUs": ["AU1"], "labels": [], "description": "brows up (AU1)", "meta_info": {"task": "au"}},
        {"AUs": None, "labels": ["Happiness"], "description": "a happy smile", "meta_info": {"task": "emotion"}},
        {"AUs": None, "labels": ["Sadness"], "description": "a sad face", "meta_info": {"task": "emotion"}},
    ]
    completions = ["brows up (AU1)", "a happy smile <answer>Happiness</answer>", "x <answer>Anger</answer>"]
    m = score(samples, completions, "faba")
    assert m["faba_au"]["n"] == 1 and m["faba_au"]["recognition"] == 1.0 and m["faba_au"]["rouge_l"] == 1.0
    assert m["faba_au"]["rege"] == pytest.approx(200.0)
    emo = m["faba_emotion"]
    assert emo["n"] == 2 and emo["recognition"] == 0.5
    assert emo["rege"] == pytest.approx(100 * 0.5 + 100 * emo["rouge_l"])


def test_rouge_and_rege_use_samples_with_a_reference():
    m = score(SAMPLES, COMPLETIONS, "fea")
    assert 0 < m["rouge_l"] < 1 and m["rege"] == pytest.approx(100 * m["accuracy"] + 100 * m["rouge_l"])


def test_unknown_protocol():
    with pytest.raises(FacialR1Error, match="unknown protocol 'ck'"):
        score(SAMPLES, COMPLETIONS, "ck")


def test_eval_accounts_for_every_row(tiny_model, synfacs_small, tmp_path):
    import json

    from facial_r1 import checkpoints, evaluate

    rows = [json.loads(line) for line in (synfacs_small / "test.jsonl").read_text().splitlines()[:3]]
    rows[0]["AUs"] = rows[0]["AUs"] + ["AU3", "L12"]  # a code FACS lacks (dropped, counted) and a side form
    lines = [json.dumps(r) for r in rows]
    lines.append(json.dumps({**rows[1], "id": "gone", "image": "missing.png"}))  # image not found
    lines.append("{not json")                                                    # bad row
    data = tmp_path / "test.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(FacialR1Error, match=r"2 of 5 rows cannot be scored .*--skip-bad"):
        evaluate.main(str(tiny_model), str(data), [str(synfacs_small)], "synfacs", str(tmp_path / "e"), max_new_tokens=4)
    m = evaluate.main(str(tiny_model), str(data), [str(synfacs_small)], "synfacs", str(tmp_path / "e"),
                      max_new_tokens=4, skip_bad=True)
    assert (m["n_input"], m["n_scored"], m["n"]) == (5, 3, 3)
    assert m["skipped"] == {"bad_row": 1, "image_missing": 1}
    assert m["dropped_au_codes"] == {"unknown": {"AU3": 1}, "not_scored": {}}
    written = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert written["n_input"] == written["n_scored"] + sum(written["skipped"].values())
    assert written["max_new_tokens"] == 4


@pytest.mark.parametrize("given, recorded, expected", [
    (None, None, 256),   # nothing recorded (a hub model): the released eval's 256
    (None, 96, 256),     # trained shorter: still 256
    (None, 512, 512),    # trained longer: its own length
    (64, 512, 64),       # given wins
])
def test_generation_budget_from_the_checkpoint(tmp_path, given, recorded, expected):
    from facial_r1 import checkpoints, evaluate

    (tmp_path / "ck").mkdir()
    checkpoints.write_prompt_settings(tmp_path / "ck", "full", recorded)
    assert evaluate.generation_budget(given, checkpoints.read_prompt_settings(tmp_path / "ck")) == expected


def test_a_bad_image_gives_empty_completions_and_the_batch_goes_on(tiny_model, synfacs_small, tmp_path, caplog):
    """predict and sample_completions share one loader: a face whose image does not decode gets
    "" (k of them when sampling), logged by its id; every other face of its batch is generated."""
    import logging

    from facial_r1 import checkpoints, evaluate
    from facial_r1.data.schema import read_samples_with_images

    test, _ = read_samples_with_images(synfacs_small / "test.jsonl", [synfacs_small])
    samples = [dict(s) for s in test[:5]]
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    samples[2]["image_path"] = str(bad)
    net, processor = checkpoints.load(str(tiny_model))
    with caplog.at_level(logging.WARNING, logger="facial_r1.evaluate"):
        greedy = evaluate.predict(net, processor, samples, batch_size=4, max_new_tokens=4)
        sampled = evaluate.sample_completions(net, processor, samples, "full", k=2, temperature=1.0,
                                              max_new_tokens=4, batch_size=4)
    assert [g == "" for g in greedy] == [False, False, True, False, False]
    assert [len(s) for s in sampled] == [2] * 5 and sampled[2] == ["", ""]
    assert all(t != "" for i, s in enumerate(sampled) if i != 2 for t in s)
    assert sum(samples[2]["id"] in r.getMessage() for r in caplog.records) == 2


def test_classes_narrow_a_protocol_to_the_test_sets_emotions():
    from facial_r1.scoring import full, score_table

    samples = [{"AUs": None, "labels": [e], "description": ""} for e in ("Happiness", "Neutral")]
    completions = ["<think>x</think><answer>Happiness</answer>", "<think>x</think><answer>Surprise</answer>"]
    two = full(score_table(samples, completions, "affectnet8", classes=("Happiness", "Neutral")))
    eight = full(score_table(samples, completions, "affectnet8"))
    # Happiness F1 1, Neutral F1 0 (Surprise is outside the two classes: wrong, in no column)
    assert (two["accuracy"], two["emotion_f1"]) == (0.5, 0.5)
    assert eight["emotion_f1"] == pytest.approx((1 + 0) / 8)  # Happiness 1, Surprise 0, the other six 0
    with pytest.raises(FacialR1Error, match=r"classes \['Joy'\] are not among protocol affectnet8's emotions"):
        score_table(samples, completions, "affectnet8", classes=("Joy",))
