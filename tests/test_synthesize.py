import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from facial_r1 import synthesize
from facial_r1.errors import FacialR1Error
from facial_r1.synthesize import Dedup, QualityControl, check

SAD = {"id": "s1", "AUs": ["AU1", "AU4", "AU15"], "labels": ["Sadness"]}
GOOD = ("<think>The inner brows rise (AU1), the brows draw together (AU4) and the lip corners "
        "drop (AU15).</think><answer>Sadness</answer>")


@pytest.mark.parametrize("text, qc, expected", [
    # the reference analysis passes every rule
    (GOOD, {}, set()),
    # no tags: format; no answer parsed: emotion; 26 characters of reasoning: length (AUs are cited)
    ("sad face with AU1 AU4 AU15", {}, {"format", "emotion", "length"}),
    # one AU missing: F1 = 0.8 fails the exact rule ...
    (GOOD.replace(" and the lip corners drop (AU15)", ""), {}, {"aus"}),
    # ... and passes a 0.8 threshold
    (GOOD.replace(" and the lip corners drop (AU15)", ""), {"au_f1_min": 0.8}, set()),
    # an extra AU is also a mismatch
    (GOOD.replace("(AU15)", "(AU15), cheeks raised (AU6)"), {}, {"aus"}),
    # wrong emotion
    (GOOD.replace("Sadness", "Anger"), {}, {"emotion"}),
    # hedging word, matched as a word only ("button" would not count)
    (GOOD.replace("The inner", "However, the inner"), {}, {"contradiction"}),
    (GOOD.replace("The inner", "The button-nosed inner"), {}, set()),
    # too long for a 60-character cap
    (GOOD, {"max_chars": 60}, {"length"}),
])
def test_quality_control_rules(text, qc, expected):
    assert set(check(text, SAD, QualityControl(**qc), Dedup(0.9))) == expected


def test_retry_messages_say_what_was_wrong():
    faults = check(GOOD.replace("(AU15)", "").replace("Sadness", "Fear"), SAD, QualityControl(), Dedup(0.9))
    assert faults["aus"] == "you cited AU1, AU4 but the face shows AU1, AU4, AU15"
    assert faults["emotion"] == "you answered Fear but the emotion is Sadness"


@pytest.mark.parametrize("kept, text, duplicate", [
    # the same text again
    ([GOOD], GOOD, True),
    # one word of 19 changed: trigram Jaccard 0.75 < 0.9, still distinct
    ([GOOD], GOOD.replace("draw", "pull"), False),
    # punctuation and case do not make a new text
    ([GOOD], GOOD.upper().replace(",", ";"), True),
    # a different description
    ([GOOD], "<think>The lips part (AU25) and the jaw drops (AU26).</think><answer>Surprise</answer>", False),
    # nothing kept yet
    ([], GOOD, False),
])
def test_near_duplicates(kept, text, duplicate):
    index = Dedup(0.9)
    for k in kept:
        index.add(k)
    assert index.is_duplicate(text) is duplicate


def test_duplicate_is_rejected_only_after_the_other_rules_pass():
    index = Dedup(0.9)
    index.add(GOOD)
    assert set(check(GOOD, SAD, QualityControl(), index)) == {"duplicate"}
    assert set(check(GOOD.replace("Sadness", "Anger"), SAD, QualityControl(), index)) == {"emotion"}


def test_torn_progress_line_is_cut_off(tmp_path):
    log = tmp_path / "out.log.jsonl"
    log.write_text('{"id": "a", "kept": false, "reasons": ["aus"], "attempts": 1}\n{"id": "b", "ke')
    assert list(synthesize.read_log(log)) == ["a"]
    assert not log.read_text().endswith("}\n")  # reading alone changes nothing (other processes may append)
    assert list(synthesize.read_log(log, repair=True)) == ["a"]
    assert log.read_text().endswith("}\n")


def test_a_model_with_nothing_valid_reports_so(tiny_model, synfacs_small, tmp_path):
    out = tmp_path / "synth.jsonl"
    settings = synthesize.Synthesis(attempts=2, batch_size=8, max_new_tokens=8)
    report = synthesize.main(str(tiny_model), str(synfacs_small / "train.jsonl"), [str(synfacs_small)], str(out),
                             settings)
    assert report["kept"] == 0 and report["finished"] == report["input"] == 48
    assert "no sample passed quality control" in report["message"]
    assert not out.exists()
    on_disk = json.loads(out.with_suffix(".report.json").read_text())
    assert on_disk["rejected_by_reason"]["format"] == 48


def test_corrupt_image_is_reported_not_fatal(tiny_model, synfacs_small, tmp_path):
    rows = [json.loads(x) for x in (synfacs_small / "train.jsonl").read_text().splitlines()][:4]
    other = tmp_path / "other_folder"
    other.mkdir()
    (other / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG header, then nothing
    rows[1]["image"] = "broken.png"  # relative, inside a given image folder: only the decoding fails
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = synthesize.main(str(tiny_model), str(data), [str(synfacs_small), str(other)], str(tmp_path / "s.jsonl"),
                             synthesize.Synthesis(attempts=1, max_new_tokens=4))
    assert report["input"] == 3 and report["finished"] == 3
    [problem] = report["unreadable_input"]
    assert rows[1]["id"] in problem and "broken.png" in problem and "absolute" not in problem


def test_an_image_gone_bad_mid_run_fails_only_its_sample(tmp_path):
    """Images are checked when the data is read; one that breaks later (deleted, rewritten)
    is rejected for its sample with the error, and the rest of the batch goes on."""
    from PIL import Image

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (32, 32)).save(good)
    bad.write_bytes(b"not a png")
    batch = [{"id": "ok", "image_path": str(good), "question": "?", "AUs": ["AU12"], "labels": ["Happiness"]},
             {"id": "broken", "image_path": str(bad), "question": "?", "AUs": ["AU4"], "labels": ["Anger"]}]

    def generate(images, prompts, *args, **kwargs):
        assert len(images) == 1  # the bad sample never reaches the model
        return ["<think>The lip corners rise (AU12), a smile of real joy.</think><answer>Happiness</answer>"]
    records = synthesize.synthesize_batch(generate, batch, synthesize.Synthesis(attempts=2), Dedup(0.9),
                                          "question", "stub")
    assert records[0]["kept"] and records[1]["kept"] is False and records[1]["reasons"] == ["image"]
    assert "broken" in records[1]["error"]


def _kept_in_log(log):
    return [r for r in map(json.loads, log.read_text().splitlines()) if r["kept"]]


def test_resume_after_a_kill_loses_and_repeats_nothing(guided_model, synfacs_small, tmp_path):
    out = tmp_path / "synth.jsonl"
    cmd = [sys.executable, "-m", "facial_r1.cli", "synthesize", "--model", str(guided_model),
           "--data", str(synfacs_small / "train.jsonl"), "--image-folders", str(synfacs_small), "--out", str(out),
           "--attempts", "1", "--batch-size", "4", "--max-new-tokens", "96"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = out.with_suffix(".log.jsonl")
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 8):
        assert proc.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept_before_kill = _kept_in_log(log)
    assert log.read_text().count("\n") < 48 and kept_before_kill  # killed mid-run, with rows kept already
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [json.loads(x)["id"] for x in log.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 48
    report = json.loads(out.with_suffix(".report.json").read_text())
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert report["finished"] == 48 and report["kept"] == len(rows) == len(_kept_in_log(log)) > len(kept_before_kill)
    assert [r["row"] for r in kept_before_kill] == rows[:len(kept_before_kill)]  # kept rows survive the kill
    # the restarted run's near-duplicate index was rebuilt from the log: no kept row repeats an earlier one
    dedup = Dedup(0.9)
    for r in rows:
        assert not dedup.is_duplicate(r["description"])
        dedup.add(r["description"])


def test_two_processes_share_the_work(guided_model, synfacs_small, tmp_path):
    # what `accelerate launch` does on several GPUs, here as two CPU processes under torchrun
    out = tmp_path / "synth.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "facial_r1.cli",
           "synthesize", "--model", str(guided_model), "--data", str(synfacs_small / "train.jsonl"),
           "--image-folders", str(synfacs_small), "--out", str(out), "--attempts", "1", "--max-new-tokens", "96", "--batch-size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single" / "synth.jsonl"
    synthesize.main(str(guided_model), str(synfacs_small / "train.jsonl"), [str(synfacs_small)], str(single),
                    synthesize.Synthesis(attempts=1, max_new_tokens=96, batch_size=8))  # the same batches
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shares = [[json.loads(x) for x in out.with_suffix(f".log-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert [len(s) for s in shares] == [24, 24]
    report = json.loads(out.with_suffix(".report.json").read_text())
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert report["finished"] == 48 and report["kept"] == len(rows) > 0
    # each process dedups only its own share; the final pass across shares drops the rows that
    # repeat another share's (it ran: 27 kept in the shares, 24 after it) and leaves what one process keeps
    assert sum(r["kept"] for s in shares for r in s) > report["kept"]
    assert rows == [json.loads(x) for x in single.read_text().splitlines()]

    # again from the partial logs of a killed two-process run (one with a torn last line): the main
    # process alone repairs them, every process reads them before any appends, nothing is redone
    again = tmp_path / "again" / "synth.jsonl"
    again.parent.mkdir()
    shutil.copy(out.with_suffix(".fingerprint"), again.with_suffix(".fingerprint"))
    lines = {r: out.with_suffix(f".log-rank{r}.jsonl").read_text().splitlines(keepends=True) for r in (0, 1)}
    again.with_suffix(".log-rank0.jsonl").write_text("".join(lines[0][:10]) + lines[0][10][:25])
    again.with_suffix(".log-rank1.jsonl").write_text("".join(lines[1][:5]))
    cmd[cmd.index(str(out))] = str(again)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "15 done before, 33 to go" in done.stderr
    ids = [json.loads(x)["id"] for r in (0, 1) for x in again.with_suffix(f".log-rank{r}.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 48  # each sample finished once, none lost
    logged = [again.with_suffix(f".log-rank{r}.jsonl").read_text() for r in (0, 1)]
    assert logged[0].startswith("".join(lines[0][:10])) and logged[1].startswith("".join(lines[1][:5]))
    report = json.loads(again.with_suffix(".report.json").read_text())
    assert report["finished"] == 48 and report["kept"] == len(again.read_text().splitlines()) > 0


@pytest.mark.parametrize("requested, processes, vllm_installed, cuda, expected", [
    ("auto", 1, True, True, "vllm"),  # installed, on a GPU, one process: vLLM
    ("auto", 1, True, False, "hf"),  # no GPU
    ("auto", 1, False, True, "hf"),  # not installed
    ("auto", 4, True, True, "hf"),  # accelerate launch: HF, one process per GPU
    ("hf", 1, True, True, "hf"),  # asked for
    ("vllm", 1, True, True, "vllm"),
    ("vllm", 1, False, True, "vLLM is not installed"),
    ("vllm", 1, True, False, "needs a CUDA GPU"),
    ("vllm", 2, True, True, "runs in one process"),
    ("sglang", 1, True, True, "unknown engine 'sglang'"),
])
def test_engine_choice(requested, processes, vllm_installed, cuda, expected):
    from facial_r1.generation import resolve_engine

    if expected in ("hf", "vllm"):
        assert resolve_engine(requested, processes, vllm_installed, cuda) == expected
    else:
        with pytest.raises(FacialR1Error, match=expected):
            resolve_engine(requested, processes, vllm_installed, cuda)


def test_asking_for_vllm_here_fails_before_any_work(tiny_model, synfacs_small, tmp_path):
    with pytest.raises(FacialR1Error, match="engine vllm"):
        synthesize.main(str(tiny_model), str(synfacs_small / "train.jsonl"), [synfacs_small], str(tmp_path / "o.jsonl"),
                        synthesize.Synthesis(engine="vllm"))
    assert not list(tmp_path.iterdir())  # nothing written


def test_sampled_retries_are_the_same_twice(tiny_model, synfacs_small, tmp_path):
    """Retries sample; their generator is seeded by the settings' seed and the batch, so two
    runs write the same log, and another seed writes another."""
    logs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path / name / "synth.jsonl"
        synthesize.main(str(tiny_model), str(synfacs_small / "train.jsonl"), [str(synfacs_small)], str(out),
                        synthesize.Synthesis(attempts=2, batch_size=16, max_new_tokens=12, seed=seed))
        logs[name] = [json.loads(x) for x in out.with_suffix(".log.jsonl").read_text().splitlines()]
        assert all(r["attempts"] == 2 for r in logs[name])  # the sampled attempt ran for every face
    assert logs["a"] == logs["b"]
    assert [r["last"] for r in logs["a"]] != [r["last"] for r in logs["c"]]


def test_a_log_from_other_inputs_is_not_reused(tiny_model, synfacs_small, tmp_path, caplog):
    out = tmp_path / "synth.jsonl"
    data, folders = str(synfacs_small / "train.jsonl"), [str(synfacs_small)]
    synthesize.main(str(tiny_model), data, folders, str(out), synthesize.Synthesis(attempts=1, max_new_tokens=4))
    log = out.with_suffix(".log.jsonl")
    first = log.read_text()
    # the same inputs: every sample is already done, nothing is generated again
    synthesize.main(str(tiny_model), data, folders, str(out), synthesize.Synthesis(attempts=1, max_new_tokens=4))
    assert log.read_text() == first
    # other settings: the old log is dropped, said so, and the samples are redone
    with caplog.at_level("WARNING"):
        synthesize.main(str(tiny_model), data, folders, str(out), synthesize.Synthesis(attempts=1, max_new_tokens=6))
    assert "written for other inputs" in caplog.text
    assert log.read_text() != first and log.read_text().count("\n") == 48


def test_a_row_duplicating_an_earlier_round_is_not_kept(tmp_path):
    """Rounds add to the data: a new row that near-duplicates a row kept by an earlier round is
    rejected as a duplicate, in the final pass over all shares too."""
    todo = [{"id": "a"}, {"id": "b"}]
    other = "<think>The lips part (AU25) and the jaw drops (AU26).</think><answer>Surprise</answer>"
    done = {"a": {"id": "a", "kept": True, "attempts": 1, "row": {"id": "a", "description": GOOD}},
            "b": {"id": "b", "kept": True, "attempts": 1, "row": {"id": "b", "description": other}}}
    report = synthesize.finalize(todo, done, tmp_path / "s.jsonl", [], synthesize.Synthesis(), kept_before=[GOOD])
    assert report["kept"] == 1 and report["rejected_by_reason"] == {"duplicate": 1}
    assert [json.loads(x)["id"] for x in (tmp_path / "s.jsonl").read_text().splitlines()] == ["b"]


@pytest.mark.parametrize("sample_first, calls, kept", [
    # greedy first: one text for both faces with the same AUs; QC keeps one, the retry the other
    (False, [False, True], [1, 2]),
    # sampled first: two wordings, both kept at the first attempt
    (True, [True], [1, 1]),
])
def test_the_first_attempt_is_greedy_unless_sample_first(tmp_path, sample_first, calls, kept):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "f.png")
    batch = [{**SAD, "id": f"s{i}", "question": "What emotion does this face show?",
              "image_path": str(tmp_path / "f.png")} for i in (1, 2)]
    sampled = [GOOD, GOOD.replace("The inner brows rise", "Here the inner ends of the brows go up")]
    seen = []

    def generate(images, prompts, max_new_tokens, do_sample, temperature, seed=None):
        seen.append(do_sample)
        return sampled[-len(prompts):] if do_sample else [GOOD] * len(prompts)

    settings = synthesize.Synthesis(attempts=2, sample_first=sample_first)
    records = synthesize.synthesize_batch(generate, batch, settings, Dedup(0.9), "question", "stub")
    assert seen == calls
    assert [r["attempts"] for r in records] == kept and all(r["kept"] for r in records)


def test_vllm_sampling_is_seeded(tiny_model, monkeypatch):
    """vLLM cannot install beside the CPU torch: a stand-in module records what the engine is asked.
    A sampled call carries its seed into SamplingParams, a greedy one none; synthesis seeds each
    sampled attempt by its batch and attempt, so a rerun draws the same texts on either engine."""
    import sys
    import types

    from facial_r1 import checkpoints, generation

    asked = []

    class SamplingParams:
        def __init__(self, **kwargs):
            asked.append(kwargs)

    class LLM:
        def __init__(self, model, **kwargs):
            self.model = model

        def generate(self, inputs, params, use_tqdm=False):
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="x")]) for _ in inputs]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    run = generation.vllm_generator(str(tiny_model), checkpoints.load_processor(str(tiny_model)))
    from PIL import Image

    face = Image.new("RGB", (32, 32))
    run([face], ["p"], 8, do_sample=True, temperature=0.8, seed=7)
    run([face], ["p"], 8, do_sample=False, seed=7)
    assert [(a["seed"], a["temperature"]) for a in asked] == [(7, 0.8), (None, 0.0)]

    seeds = []

    def generate(images, prompts, max_new_tokens, do_sample, temperature, seed=None):
        seeds.append(seed)
        return ["no"] * len(prompts)

    batch = [{**SAD, "id": "a", "question": "q", "image_path": None}]
    monkeypatch.setattr(synthesize, "load_image", lambda path, sid: face)
    settings = synthesize.Synthesis(attempts=2, sample_first=True, seed=3)
    synthesize.synthesize_batch(generate, batch, settings, Dedup(0.9), "question", "stub")
    synthesize.synthesize_batch(generate, batch, settings, Dedup(0.9), "question", "stub")
    assert seeds[:2] == seeds[2:] and seeds[0] != seeds[1]  # per attempt, the same on a rerun
