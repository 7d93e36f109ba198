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
