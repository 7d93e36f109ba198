import json
import re

import pytest

from facial_r1 import pipeline, report, synthesize
from facial_r1.data.schema import read_jsonl
from facial_r1.errors import FacialR1Error


def test_report_tables_and_plot(tmp_path):
    rows = [{"stage": "SFT", "au_f1": [0.5, 0.45, 0.55], "accuracy": [0.25, 0.2, 0.3], "emotion_f1": [0.2, 0.1, 0.3],
             "rouge_l": [0.4, 0.38, 0.42], "format_rate": [1.0, 1.0, 1.0], "cited_per_gold": [1.1, 1.0, 1.2],
             "sampled": {"k": 8, "faces": 100, "mean_acc": [0.3, 0.25, 0.35], "pass_acc": [0.6, 0.5, 0.7]}},
            {"stage": "+ GRPO", "au_f1": [0.6, 0.55, 0.65], "accuracy": [0.3, 0.25, 0.35], "emotion_f1": None,
             "rouge_l": [0.4, 0.38, 0.42], "format_rate": [0.9, 0.85, 0.95], "cited_per_gold": [0.9, 0.85, 0.95],
             "sampled": {"k": 8, "faces": 100, "mean_acc": [0.4, 0.35, 0.45], "pass_acc": [0.62, 0.5, 0.7]}},
            {"stage": "round 1: nothing kept, stopped"}]
    diffs = [{"stage": "+ GRPO", "vs": "SFT", "au_f1": [0.1, 0.02, 0.18], "accuracy": [0.05, -0.01, 0.1],
              "emotion_f1": None, "rouge_l": [0.0, 0.0, 0.0], "format_rate": [-0.1, -0.15, -0.05],
              "cited_per_gold": [-0.2, -0.3, -0.1],
              "sampled": {"mean_acc": [0.1, 0.05, 0.15], "pass_acc": [0.02, -0.1, 0.1]}}]
    result = {"rows": rows, "diffs": diffs, "n_faces": 600, "bootstrap": 1000}
    table = report.report_table(result)
    # percent for scores, a ratio for AUs cited per true AU, '-' where a metric is not scored
    assert ("| SFT | 50.0 [45.0, 55.0] | 25.0 [20.0, 30.0] | 20.0 [10.0, 30.0] | 40.0 [38.0, 42.0] | "
            "100.0 [100.0, 100.0] | 1.10 [1.00, 1.20] |") in table
    assert "| + GRPO | 60.0 [55.0, 65.0] | 30.0 [25.0, 35.0] | - |" in table
    assert "| round 1: nothing kept, stopped | - | - | - | - | - | - |" in table
    assert "| + GRPO | SFT | +10.0 [+2.0, +18.0] | +5.0 [-1.0, +10.0] | - |" in report.diff_table(result)
    assert "| -0.20 [-0.30, -0.10] |" in report.diff_table(result)
    sampled = report.sampled_tables(result)
    assert "8 completions on each of the first 100 held-out faces" in sampled
    assert "| stage | mean@8 acc | pass@8 acc |" in sampled  # only the metrics the rows have
    assert "| + GRPO | 40.0 [35.0, 45.0] | 62.0 [50.0, 70.0] |" in sampled
    assert "| + GRPO | SFT | +10.0 [+5.0, +15.0] | +2.0 [-10.0, +10.0] |" in sampled
    assert report.sampled_tables({"rows": rows[2:], "diffs": []}) == ""
    per_au = report.per_au_table({"SFT": {"AU12": 0.5, "AU4": 0.25}, "+ GRPO": {"AU4": 0.75}})
    assert "| stage | AU4 | AU12 |" in per_au and "| + GRPO | 75 | - |" in per_au  # AUs in FACS order
    seen = [("SFT", "300 seed faces", "reasoning")]
    report.write_report(tmp_path, result, seen, {"sft": 10.0}, 12.0, 250.0, cached=["01-sft.json"],
                        per_au={"SFT": {"AU12": 0.5}})
    assert (tmp_path / "metrics.png").stat().st_size > 1000
    text = (tmp_path / "report.md").read_text()
    assert "| **total** | **12** |" in text and "| SFT | 300 seed faces | reasoning |" in text
    assert "renders 250 SynFACS faces/s" in text and "stage cache (same inputs and source, run before): 01-sft.json" in text
    assert "## F1 per AU" in text and "## Sampled at the training temperature" in text


@pytest.mark.parametrize("overrides, message", [
    ({"roundz": 2}, r"unknown key\(s\) \['roundz'\]"),  # a typo at the top level
    ({"synthesis": {"atempts": 2}}, r"synthesis: .*unexpected keyword argument 'atempts'"),  # caught before SFT
    ({"grpo": {"num_generations": 3}}, r"grpo: pipeline key grpo.num_generations 3: .*divisible by num_generations"),
    ({"round_grpo": {"max_steps": 1, "bogus": 1}}, r"round1 grpo: pipeline key round_grpo.bogus: unknown key"),
    ({"sft": {"save_strategy": "sometimes"}}, r"sft: pipeline key sft.save_strategy 'sometimes'"),
    ({"grpo": {"max_steps": 2, "miniature": {"vision_warmup_steps": 3}}}, r"grpo: miniature: warm-starts belong"),
    ({"synthesis": {"qc": {"au_f1": 0.5}}}, r"synthesis: .*unexpected keyword argument 'au_f1'"),
    ({"synthesis": {"engine": "sglang"}}, "unknown engine 'sglang'"),
    # GRPO must not cut what eval scores whole (it would teach shorter reasoning)
    ({"grpo": {"max_completion_length": 96}}, r"grpo: max_completion_length 96 is under eval_max_new_tokens 128"),
    ({"round_grpo": {"max_steps": 1, "max_completion_length": 64}}, r"round1 grpo: max_completion_length 64 is under"),
    ({"grpo": {"reward_labels": "random"}}, r"grpo: reward_labels must be own or shuffled, got 'random'"),
    ({"grpo": {"rewards": ["au_f1", "acc"]}}, r"grpo: unknown reward\(s\) \['acc'\]"),
    # text where a number belongs fails here, not when the optimizer is built mid-run
    ({"grpo": {"learning_rate": "5e-05x"}}, r"grpo: pipeline key grpo.learning_rate '5e-05x': learning_rate must be a number"),
    # budgets in steps: missing, zero, negative or not a whole number, named by key
    ({"sft": {"max_steps": 0}}, r"sft: max_steps must be a positive integer, got 0"),
    ({"grpo": {"max_steps": -5}}, r"grpo: max_steps must be a positive integer, got -5"),
    ({"round_sft": {"max_steps": 2.5}}, r"round1 sft: max_steps must be a positive integer, got 2.5"),
    ({"grpo": {"max_steps": None}}, r"grpo: max_steps is missing"),
    ({"round_grpo": {"max_steps": None}}, r"round1 grpo: max_steps is missing"),
    ({"sft": {"max_steps": 5, "miniature": {"vision_warmup_steps": -1}}}, r"sft: miniature.vision_warmup_steps must be an integer >= 0"),
    ({"sft": {"max_steps": 5, "miniature": {"instruct_warmup_steps": 1.5}}}, r"sft: miniature.instruct_warmup_steps must be an integer >= 0"),
    # seeds are integers
    # an evaluation beside a stage that runs on every device would share them
    ({"eval_alongside": True, "launcher": "torchrun --nproc_per_node 2"},
     r"pipeline: eval_alongside runs each evaluation beside the next training stage, which runs in 2 processes"),
    ({"seed": "one"}, r"seed must be an integer, got 'one'"),
    ({"seed": 1.5}, r"seed must be an integer, got 1.5"),
    ({"synfacs": {"n": 10, "seed": "x"}}, r"synfacs.seed must be an integer, got 'x'"),
])
def test_bad_settings_fail_before_any_stage(tmp_path, overrides, message):
    with pytest.raises(FacialR1Error, match=message):
        pipeline.main("configs/pipeline/tiny-cpu.yaml", {"run_dir": str(tmp_path / "run"), **overrides})
    assert not (tmp_path / "run").exists()


def stub_generator(*args, **kwargs):
    """A stand-in for the model in synthesis only: it writes the analysis the guided prompt
    asks for, so QC keeps rows and the round's retraining branch runs (a 3-step model keeps none)."""
    calls = []

    def generate(images, prompts, max_new_tokens, do_sample=False, temperature=1.0, seed=None):
        out = []
        calls.append(len(prompts))
        for i, p in enumerate(prompts):
            if (i + len(calls)) % 3 == 0:  # some faces fail QC (wrong emotion), left for the next round
                out.append("<think>A face with a movement (AU1).</think><answer>Contempt</answer>")
                continue
            aus = re.search(r"Action Units: ([^.]*)\.", p).group(1)
            emotion = re.search(r"The emotion is (\w+)\.", p).group(1)
            cited = " and ".join(f"a movement ({a})" for a in aus.split(", ") if a != "none") or "a still face"
            out.append(f"<think>Here I see {cited} on this face.</think><answer>{emotion}</answer>")
        return out
    return generate


REDUCED = {
    "synfacs": {"n": 90, "seed": 3, "test_fraction": 0.33, "reasoning_fraction": 0.4},
    "sft": {"max_steps": 3, "miniature": {"vision_warmup_steps": 2, "vision_warmup_faces": 16, "instruct_warmup_steps": 2},
            "save_strategy": "no"},
    "grpo": {"max_steps": 2, "max_completion_length": 32, "save_strategy": "no"},
    "round_sft": {"max_steps": 2, "save_strategy": "no"},
    "round_grpo": {"max_steps": 1, "max_completion_length": 32, "save_strategy": "no"},
    "rounds": 2, "bootstrap": 200,
    "synthesis": {"attempts": 2, "max_new_tokens": 32, "qc": {"dedup_threshold": 1.01}},
    "eval_max_new_tokens": 32,
    "eval_alongside": False,  # every stage in the test's process (one core each test worker); on in one test below
}


def test_reduced_pipeline_twice_gives_the_same_numbers(tmp_path, monkeypatch, caplog):
    """Budgets in steps: two runs of the same config give identical metrics rows, sampled ones
    included; every row has a CI, each stage its paired difference, the control trained as many
    steps as GRPO, the shuffled-label GRPO control paired with GRPO. Then the stage cache: a run
    in another folder with the first's cache copies every training and eval stage and gives its
    numbers; one that changes only GRPO copies SFT and its eval, and runs the rest."""
    monkeypatch.setattr(synthesize, "_generator", stub_generator)
    caplog.set_level("INFO", logger="facial_r1")
    cache = str(tmp_path / "cache")
    sampled = {**REDUCED, "shuffled_control": True, "sample_faces": 6, "samples_per_face": 3}
    results = {}
    for name, extra in (("a", {"stage_cache": cache}), ("b", {}), ("c", {"stage_cache": cache}),
                        ("d", {"stage_cache": cache, "rounds": 0, "grpo": {**REDUCED["grpo"], "max_steps": 3}})):
        report_ = pipeline.main("configs/pipeline/tiny-cpu.yaml", {"run_dir": str(tmp_path / name), **sampled, **extra})
        results[name] = json.loads((report_.parent / "metrics.json").read_text())
    a, b, c, d = (results[k] for k in "abcd")
    assert a["rows"] == b["rows"] and a["diffs"] == b["diffs"]  # computed twice, to the digit
    assert a["cached_stages"] == b["cached_stages"] == []
    # c copies SFT, the control, both GRPOs and their evals; the rounds run again (a synthesized row
    # names the model that wrote it, a path in a's folder, so their data is c's own) to a's numbers
    assert len(c["cached_stages"]) == 8 and c["rows"] == a["rows"] and c["diffs"] == a["diffs"]
    assert "copied from the stage cache" in caplog.text
    assert (tmp_path / "c" / "sft" / "eval" / "predictions.jsonl").read_text() == \
        (tmp_path / "a" / "sft" / "eval" / "predictions.jsonl").read_text()
    # d: GRPO 3 steps, so the control too (as many steps as GRPO): SFT and its eval copied, nothing else
    assert d["cached_stages"] == ["01-sft.json", "02-eval.json"]
    assert json.loads((tmp_path / "d" / "grpo" / "trainer_state.json").read_text())["global_step"] == 3
    stages = [r["stage"] for r in a["rows"]]
    assert stages[:4] == ["SFT", "control: SFT only, +2 steps", "control: GRPO, rewards on shuffled labels", "+ GRPO"]
    assert stages[4].startswith("+ round 1 (") and stages[5].startswith("+ round 2 (")  # both rounds retrained
    kept1, kept2 = (int(re.search(r"\((\d+) of 36 pool", s).group(1)) for s in stages[4:6])
    assert 0 < kept1 < kept2 <= 36  # rounds add to the reasoning data
    shuffled = "control: GRPO, rewards on shuffled labels"
    assert [(x["stage"], x["vs"]) for x in a["diffs"]][:6] == [
        ("control: SFT only, +2 steps", "SFT"), (shuffled, "SFT"), ("+ GRPO", "SFT"),
        ("+ GRPO", "control: SFT only, +2 steps"), ("+ GRPO", shuffled), (stages[4], "+ GRPO")]
    for row in a["rows"]:
        value, low, high = row["au_f1"]
        assert low <= value <= high
        assert row["sampled"]["k"] == 3 and row["sampled"]["faces"] == 6
        for key in ("mean_acc", "maj_acc", "pass_acc", "pass_acc_shuffled", "mean_au_f1"):
            value, low, high = row["sampled"][key]
            assert 0 <= low <= value <= high <= 1
        assert row["sampled"]["mean_acc"][0] <= row["sampled"]["pass_acc"][0]
    assert all("sampled" in x for x in a["diffs"])
    run = tmp_path / "a"
    samples = [json.loads(x) for x in (run / "grpo" / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all(len(x["completions"]) == 3 for x in samples)
    assert samples[0]["temperature"] == 0.8  # the GRPO stage's temperature
    control = json.loads((run / "control" / "trainer_state.json").read_text())
    assert control["global_step"] == 2  # = grpo.max_steps
    assert json.loads((run / "sft" / "trainer_state.json").read_text())["global_step"] == 3
    assert {"round1 sft", "round1 grpo", "round2 sft", "round2 grpo"} <= set(a["timings"])
    assert a["n_faces"] == 30 and a["render_faces_per_s"] > 0
    assert ("vision warm-start", "16 rendered + 24 seed faces, 2 steps", "AUs + emotion") in map(tuple, a["trained_on"])
    assert ("instruction warm-start", "no face: 16 text-only guided prompts, 2 steps",
            "random AU lists + random emotions (not paired as in faces), with reasoning citing them") \
        in map(tuple, a["trained_on"])
    assert ("control: GRPO on shuffled labels", "16 prompts drawn from 36 pool faces (2 steps, 25% with the guided "
            "prompt)", "another face's AUs + emotion (a derangement of the pool), through the rewards") \
        in map(tuple, a["trained_on"])
    # only the first SFT warm-starts: not the control, not the rounds' SFT (runs a and b; c and d copy it)
    assert caplog.text.count("instruction warm-start: 2 steps") == 2
    assert (run / "metrics.png").is_file() and (run / "round2" / "synth.report.json").is_file()
    text = (run / "report.md").read_text()
    assert "## Sampled at the training temperature (3 completions on each of the first 6 held-out faces)" in text
    assert "## F1 per AU" in text
    # each round retrains on the seed set + every row kept so far
    seed_rows = read_jsonl(run / "synfacs" / "seed.jsonl")
    kept = read_jsonl(run / "round1" / "synth.jsonl") + read_jsonl(run / "round2" / "synth.jsonl")
    assert read_jsonl(run / "round2" / "sft_data.jsonl") == seed_rows + kept and len(kept) == kept2


def test_a_rerun_with_changed_settings_never_reuses_stale_rows(tmp_path, monkeypatch, caplog):
    """The same run_dir, GRPO trained one step longer: round 1's progress log was written by
    another model, so it is dropped (said so) and every pool face is synthesized again."""
    monkeypatch.setattr(synthesize, "_generator", stub_generator)
    small = {**REDUCED, "rounds": 1, "control": False, "run_dir": str(tmp_path)}
    pipeline.main("configs/pipeline/tiny-cpu.yaml", small)
    log = tmp_path / "round1" / "synth.log.jsonl"
    stamp = (tmp_path / "round1" / "synth.fingerprint").read_text()
    with open(log, "a") as f:  # a record only the first run's log has
        f.write(json.dumps({"id": "from-the-first-run", "kept": False, "reasons": ["aus"], "attempts": 1}) + "\n")
    with caplog.at_level("WARNING", logger="facial_r1.synthesize"):
        pipeline.main("configs/pipeline/tiny-cpu.yaml", {**small, "grpo": {**REDUCED["grpo"], "max_steps": 3}})
    assert "written for other inputs" in caplog.text
    assert (tmp_path / "round1" / "synth.fingerprint").read_text() != stamp
    records = [json.loads(x)["id"] for x in log.read_text().splitlines()]
    assert "from-the-first-run" not in records and len(set(records)) == len(records) == 36  # all redone
    assert json.loads((tmp_path / "grpo" / "trainer_state.json").read_text())["global_step"] == 3


def test_changed_synfacs_settings_render_anew(tmp_path):
    p = pipeline.read_pipeline("configs/pipeline/tiny-cpu.yaml", {"run_dir": str(tmp_path), **REDUCED})
    pipeline._make_data(p, tmp_path)
    test = tmp_path / "synfacs" / "test.jsonl"
    ids = [s["id"] for s in read_jsonl(test)]
    p.synfacs = {**p.synfacs, "seed": 4}
    pipeline._make_data(p, tmp_path)
    assert [s["id"] for s in read_jsonl(test)] != ids  # not the stale faces of seed 3


def _stage_results(run):
    return {p.name: json.loads(p.read_text()) for p in sorted((run / "stages").glob("*.result.json"))}


@pytest.mark.slow
def test_stages_in_fresh_processes_give_the_numbers_of_inline(tmp_path):
    """launcher python: each stage (SFT, eval, control, GRPO, synthesis) is its own fresh process;
    the numbers are those of the same stages run in this process, to the digit."""
    import os

    small = {**REDUCED, "rounds": 1}
    results = {}
    for name, extra in (("python", {"launcher": "python"}), ("inline", {"launcher": "inline"}),
                        ("alongside", {"launcher": "inline", "eval_alongside": True})):
        report = pipeline.main("configs/pipeline/tiny-cpu.yaml", {"run_dir": str(tmp_path / name), **small, **extra})
        results[name] = json.loads((report.parent / "metrics.json").read_text())
    for name in ("python", "alongside"):
        assert results[name]["rows"] == results["inline"]["rows"]
        assert results[name]["diffs"] == results["inline"]["diffs"]
    fresh = _stage_results(tmp_path / "python")
    assert list(fresh) == ["01-sft.result.json", "02-eval.result.json", "03-sft.result.json", "04-eval.result.json",
                           "05-grpo.result.json", "06-eval.result.json", "07-synthesize.result.json"]
    pids = [r["pid"] for r in fresh.values()]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids  # every stage in a process of its own
    inline = _stage_results(tmp_path / "inline")  # inline stages leave their records too (for --resume)
    assert list(inline) == list(fresh) and {r["pid"] for r in inline.values()} == {os.getpid()}
    assert all(r["fingerprint"] for r in [*inline.values(), *fresh.values()])  # each carries its inputs' stamp
    # eval_alongside: the same records in the same order; training and synthesis in this process,
    # each evaluation in one plain process of its own, timed apart
    alongside = _stage_results(tmp_path / "alongside")
    assert list(alongside) == list(fresh)
    assert [r["pid"] == os.getpid() for r in alongside.values()] == [True, False, True, False, True, False, True]
    assert {r["num_processes"] for r in alongside.values()} == {1}
    assert [k for k in results["alongside"]["timings"] if "alongside" in k] == [  # round 1 kept nothing: no 4th
        "eval sft (alongside)", "eval control (alongside)", "eval grpo (alongside)"]


@pytest.mark.slow
def test_pipeline_under_two_processes(guided_model, synfacs_small, tmp_path):
    """What accelerate launch does on 2 GPUs, as 2 CPU processes (torchrun, gloo) per stage: every
    stage starts fresh, trains/evaluates/synthesizes across both, and each file is written once.
    The trained fixture keeps rows in synthesis, so the round retrains under 2 processes too."""
    import sys

    run = tmp_path / "run"
    pipeline.main("configs/pipeline/tiny-cpu.yaml", {
        **REDUCED, "run_dir": str(run), "model": str(guided_model), "control": False, "rounds": 1,
        "synfacs": {"n": 60, "seed": 1, "test_fraction": 0.2, "reasoning_fraction": 0.5},  # synfacs_small's faces
        "sft": {"max_steps": 2, "miniature": {"vision_warmup_steps": 0, "instruct_warmup_steps": 0}, "save_strategy": "no"},
        "synthesis": {"attempts": 1, "max_new_tokens": 96, "batch_size": 8},
        "launcher": f"{sys.executable} -m torch.distributed.run --nproc_per_node 2"})
    results = _stage_results(run)
    assert [k.split("-", 1)[1] for k in results] == ["sft.result.json", "eval.result.json", "grpo.result.json",
                                                     "eval.result.json", "synthesize.result.json", "sft.result.json",
                                                     "grpo.result.json", "eval.result.json"]
    assert {r["num_processes"] for r in results.values()} == {2}
    pids = [r["pid"] for r in results.values()]
    assert len(set(pids)) == len(pids)
    test_ids = [s["id"] for s in read_jsonl(run / "synfacs" / "test.jsonl")]
    for predictions in run.glob("**/eval/predictions.jsonl"):  # gathered from both shares, written once
        assert [json.loads(x)["id"] for x in predictions.read_text().splitlines()] == test_ids
    assert len(list(run.glob("**/eval/predictions.jsonl"))) == 3
    kept = read_jsonl(run / "round1" / "synth.jsonl")
    assert kept and len({r["id"] for r in kept}) == len(kept)
    assert all((run / "round1" / f"synth.log-rank{r}.jsonl").is_file() for r in (0, 1))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["rows"][-1]["stage"].startswith(f"+ round 1 ({len(kept)} of 24 pool faces kept)")
    round_sft = json.loads((run / "round1" / "sft" / "trainer_state.json").read_text())
    assert round_sft["global_step"] == REDUCED["round_sft"]["max_steps"]


def test_the_pipeline_itself_refuses_to_run_as_several_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(FacialR1Error, match="give the launch command as launcher"):
        pipeline.main("configs/pipeline/tiny-cpu.yaml", {"run_dir": str(tmp_path), **REDUCED})
    assert not list(tmp_path.iterdir())  # before anything is written


def test_a_launcher_clears_an_earlier_runs_stage_records(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "09-eval.result.json").write_text("{}")  # left by a longer earlier run
    pipeline.Launcher("inline", tmp_path / "stages")
    assert not list((tmp_path / "stages").iterdir())


def test_a_stage_started_alongside_that_fails_raises_its_error(tmp_path):
    """The stage runs in a process of its own; its failure is the future's error, naming the spec."""
    from facial_r1.launch import Kind

    stage = pipeline.Launcher("inline", tmp_path / "stages")
    future = stage.alongside(Kind.EVAL, {"model": "none"}, model=str(tmp_path / "no-model"), data="none.jsonl",
                             image_folders=[], protocol="synfacs", out=str(tmp_path / "eval"))
    stage.close()
    with pytest.raises(FacialR1Error, match=r"stage .*01-eval.json failed \(exit code 1\)"):
        future.result()
    assert not (tmp_path / "stages" / "01-eval.result.json").exists()


def test_an_evaluation_failed_alongside_stops_the_run_at_the_next_stage(tmp_path, monkeypatch):
    """The run does not train on for minutes after an evaluation beside it failed: the next stage
    raises the evaluation's error before it starts."""
    from concurrent.futures import Future

    def failed(self, kind, inputs, **spec):
        self.count += 1
        future = Future()
        future.set_exception(FacialR1Error(f"stage {spec['out']} failed (exit code 1)"))
        self._started.append(future)
        return future
    monkeypatch.setattr(pipeline.Launcher, "alongside", failed)
    with pytest.raises(FacialR1Error, match=r"sft/eval failed"):
        pipeline.main("configs/pipeline/tiny-cpu.yaml", {**REDUCED, "run_dir": str(tmp_path), "control": False,
                                                         "rounds": 0, "eval_alongside": True})
    assert (tmp_path / "sft" / "model.safetensors").is_file() and not (tmp_path / "grpo").exists()


@pytest.mark.slow
def test_a_pipeline_killed_in_round_2_resumes_where_it_stopped(guided_model, tmp_path):
    """Kill the pipeline (SIGKILL) while round 2 trains, then `--resume`: every stage whose result
    matches its inputs is reused (not run again), the rest run, and the numbers are those of an
    uninterrupted run to the digit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    # GRPO as before completions were masked (24 tokens, cut-off ones punished): this fixture then
    # keeps some pool faces in round 1 and leaves others for round 2, which is killed
    short = {"max_completion_length": 24, "mask_truncated_completions": False}
    small = {**REDUCED, "model": str(guided_model), "control": False, "rounds": 2, "launcher": "inline",
             "grpo": {**REDUCED["grpo"], **short}, "round_grpo": {**REDUCED["round_grpo"], **short},
             "eval_max_new_tokens": 24,
             "synfacs": {"n": 60, "seed": 1, "test_fraction": 0.2, "reasoning_fraction": 0.5},
             "sft": {"max_steps": 2, "miniature": {"vision_warmup_steps": 0, "instruct_warmup_steps": 0},
                     "save_strategy": "no"},
             "synthesis": {"attempts": 1, "max_new_tokens": 96, "batch_size": 8}}
    whole = pipeline.main("configs/pipeline/tiny-cpu.yaml", {**small, "run_dir": str(tmp_path / "whole")})
    want = json.loads((whole.parent / "metrics.json").read_text())

    run = tmp_path / "killed"
    args = [f"--{k}={json.dumps(v)}" for k, v in {**small, "run_dir": str(run)}.items()]
    command = [sys.executable, "-m", "facial_r1.cli", "pipeline", "--config", "configs/pipeline/tiny-cpu.yaml", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    round2_sft = run / "stages" / "10-sft.json"  # 01-08: SFT, eval, GRPO, eval, round 1; 09: round 2's synthesis
    deadline = time.monotonic() + 600
    while not round2_sft.is_file():
        assert proc.poll() is None, "the run ended before round 2"
        assert time.monotonic() < deadline, "round 2 did not start within 600 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()
    before = _stage_results(run)
    assert len(before) == 9 and not (run / "stages" / "10-sft.result.json").exists()

    done = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed: 9 stage(s) reused" in done.stderr
    after = _stage_results(run)
    assert {k: after[k] for k in before} == before  # the first nine were not run again
    assert len(after) == 12 and len({r["pid"] for k, r in after.items() if k not in before}) == 1
    got = json.loads((run / "metrics.json").read_text())
    assert got["rows"] == want["rows"] and got["diffs"] == want["diffs"]
    assert [r["stage"] for r in got["rows"]][-1].startswith("+ round 2 (")

