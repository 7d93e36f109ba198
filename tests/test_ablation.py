"""benchmarks/method_ablation.py: its seed list and its summary over seeds (the runs themselves
are the pipeline, tested in test_pipeline.py)."""

import importlib.util

import pytest

spec = importlib.util.spec_from_file_location("method_ablation", "benchmarks/method_ablation.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


@pytest.mark.parametrize("values, expected", [(["0", "1", "2"], [0, 1, 2]), (["-3"], [-3])])
def test_seeds_are_integers(values, expected):
    assert ablation.parse_seeds(values) == expected


@pytest.mark.parametrize("bad", ["1.5", "one", ""])
def test_a_seed_that_is_not_an_integer_is_named(bad):
    with pytest.raises(SystemExit, match=f"--seeds takes integers, got {bad!r}"):
        ablation.parse_seeds(["0", bad])


def metrics(sft, grpo, diff_lo):
    row = lambda name, v: {"stage": name, **{k: [v, v - 0.05, v + 0.05] for k in ablation.KEYS}}
    return {"rows": [row("SFT", sft), row("+ GRPO", grpo)],
            "diffs": [{"stage": "+ GRPO", "vs": "SFT", **{k: [grpo - sft, diff_lo, grpo - sft + 0.02]
                                                       for k in ablation.KEYS}}]}


def test_summary_gives_mean_sd_and_counts_seeds_whose_ci_clears_zero():
    text = ablation.summary("main", {0: metrics(0.40, 0.50, 0.01), 1: metrics(0.42, 0.46, -0.01)})
    assert "| SFT | 41.0 ± 1.4 |" in text  # mean of 40 and 42, sd sqrt(2)
    assert "| + GRPO | 48.0 ± 2.8 |" in text
    assert "| + GRPO vs SFT | +10.0 [+1.0, +12.0]; +4.0 [-1.0, +6.0] |" in text
    assert text.rstrip().endswith("| 1/1 of 2 |")  # seed 0's lower bound is above 0, seed 1's is not


def finished_run(tmp_path, overrides, name="run"):
    """A run folder as the pipeline leaves it, with the fingerprint of `overrides`."""
    from facial_r1.pipeline import fingerprint, read_pipeline

    run = tmp_path / name
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    (run / "inputs.fingerprint").write_text(fingerprint(read_pipeline(ablation.CONFIG, overrides)))
    return run


@pytest.mark.parametrize("asked, reused", [
    ({"seed": 1}, True),                      # the same inputs: reused
    ({"seed": 2}, False),                     # another config
    ({"seed": 1, "grpo": {"max_steps": 7}}, False),
])
def test_a_run_is_reused_only_with_the_same_inputs(tmp_path, asked, reused):
    run = finished_run(tmp_path, {"seed": 1})
    assert ablation._finished_with(run, asked) is reused


def test_a_run_without_a_fingerprint_or_metrics_runs_again(tmp_path):
    run = finished_run(tmp_path, {"seed": 1})
    (run / "inputs.fingerprint").unlink()
    assert not ablation._finished_with(run, {"seed": 1})
    run = finished_run(tmp_path, {"seed": 1}, "other")
    (run / "metrics.json").unlink()
    assert not ablation._finished_with(run, {"seed": 1})


def test_the_fingerprint_covers_stage_configs_and_the_source(tmp_path, monkeypatch):
    from facial_r1 import launch, pipeline

    p = pipeline.read_pipeline(ablation.CONFIG, {})
    before = pipeline.fingerprint(p)
    sft = tmp_path / "sft.yaml"
    sft.write_text(open(p.sft_config).read())
    p.sft_config = str(sft)
    assert pipeline.fingerprint(p) != before  # the path is part of the config
    same = pipeline.fingerprint(p)
    sft.write_text(sft.read_text() + "\nlearning_rate: 2.0e-3\n")
    assert pipeline.fingerprint(p) != same  # so is what the stage config says
    # and facial-r1's own source: a package with one more module is another fingerprint
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(launch, "__file__", str(package / "launch.py"))
    one = pipeline.fingerprint(p)
    (package / "a.py").write_text("x = 2\n")
    assert pipeline.fingerprint(p) != one


def test_summary_gives_the_sampled_metrics_and_the_ratio_unscaled():
    def run(acc, ratio):
        row = {"stage": "+ GRPO", "au_f1": [0.4, 0.3, 0.5], "cited_per_gold": [ratio, ratio, ratio],
               "sampled": {"k": 8, "faces": 200, "pass_acc": [acc, acc, acc]}}
        return {"rows": [row], "diffs": []}
    text = ablation.summary("main", {0: run(0.5, 0.9), 1: run(0.7, 1.1)})
    assert "| stage (sampled, 8 per face on 200 faces) | mean_acc | maj_acc | pass_acc |" in text
    assert "| + GRPO | - | - | 60.0 ± 14.1 | - | - |" in text  # only pass@8 was sampled
    assert "| 1.00 ± 0.14 |" in text  # AUs cited per true AU: a ratio, not points


@pytest.mark.parametrize("variant", list(ablation.VARIANTS))
def test_every_variant_resolves_with_no_preflight_problem(variant, tmp_path):
    from facial_r1 import pipeline

    _, findings = pipeline.plan(ablation.CONFIG, {**ablation.VARIANTS[variant], "eval_alongside": False,
                                                  "run_dir": str(tmp_path)})
    assert findings.errors == []


# (variant, stage, num_generations, guided_fraction, other GRPO key: value): rows measured on the
# 4 x 8 config keep it after the shipped config went to 8 x 4, so a rerun reproduces its row
@pytest.mark.parametrize("variant, stage, generations, guided, key, value", [
    ("main", "grpo", 4, 0.25, "max_steps", 80),
    ("grpo_only", "grpo", 8, 0.5, "max_steps", 80),
    ("truncated_96", "grpo", 8, 0.5, "max_completion_length", 96),
    ("lr_3e-4", "grpo", 8, 0.5, "learning_rate", 3.0e-4),
    ("main_au_inverse_freq", "round2 grpo", 8, 0.5, "rewards", ["au_f1_inverse_freq", "accuracy", "format"]),
    ("freeze_vision_8x4", "shuffled", 4, 0.25, "freeze_vision", True),
    ("freeze_vision_8x4", "grpo", 4, 0.25, "freeze_vision", True),
    ("nts_lr_5e-5_8x4", "grpo", 4, 0.25, "learning_rate", 5.0e-5),
    ("prompts_8x4_grpo_seed_100", "shuffled", 4, 0.25, "seed", 100),
])
def test_a_variant_runs_the_grpo_it_was_measured_with(variant, stage, generations, guided, key, value, tmp_path):
    from facial_r1 import pipeline

    the, _ = pipeline.plan(ablation.CONFIG, {**ablation.VARIANTS[variant], "run_dir": str(tmp_path)})
    values = the.config(stage).values
    assert (values["num_generations"], values["miniature"]["guided_fraction"], values[key]) == (generations, guided, value)


def test_another_grpo_seed_leaves_sft_on_the_runs_seed(tmp_path):
    """prompts_8x4_grpo_seed_100 re-runs GRPO only: SFT and its control keep the run's seed, so
    the stage cache serves them and the GRPO rows start from the very same model."""
    from facial_r1 import pipeline

    the, _ = pipeline.plan(ablation.CONFIG, {**ablation.VARIANTS["prompts_8x4_grpo_seed_100"], "seed": 2,
                                             "run_dir": str(tmp_path)})
    assert {name: the.config(name).values["seed"] for name in the.stages} == {
        "sft": 2, "control": 2, "shuffled": 100, "grpo": 100}
