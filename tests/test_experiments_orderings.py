"""experiments.orderings: the paper's orderings pooled over (experiment, seed) pairs, with a
t interval on the log MSE ratio; checked against figures recomputed here by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from experiments import orderings, report
from tests.test_experiments_report import repo  # noqa: F401 (fixture)


def seeds(**mse_by_method: list[float]) -> dict[str, dict]:
    n = len(next(iter(mse_by_method.values())))
    return {
        str(s): {
            "loss": {
                m: {"mse_mean": v[s], "final_spearman_mean": 0.9 + 0.01 * s}
                for m, v in mse_by_method.items()
            }
        }
        for s in range(n)
    }


def test_ratio_and_interval_are_the_paired_t_interval_of_the_log_ratios():
    a = seeds(gptfluence=[0.1, 0.2, 0.3], simfluence=[0.3, 0.3, 0.3])
    b = seeds(gptfluence=[0.05], simfluence=[0.2])
    logs = orderings.paired_log_ratios([a, b], "gptfluence", "simfluence")
    want = np.log([1 / 3, 2 / 3, 1.0, 0.25])
    np.testing.assert_allclose(np.sort(logs), np.sort(want))
    mean, low, high = orderings.ratio_interval(logs)
    half = stats.t.ppf(0.975, 3) * want.std(ddof=1) / math.sqrt(4)
    assert mean == pytest.approx(math.exp(want.mean()))
    assert low == pytest.approx(math.exp(want.mean() - half))
    assert high == pytest.approx(math.exp(want.mean() + half))


def test_sign_test_is_the_two_sided_binomial():
    assert orderings.sign_test(6, 6) == pytest.approx(2 / 2**6)
    assert orderings.sign_test(0, 6) == pytest.approx(2 / 2**6)
    assert orderings.sign_test(3, 6) == pytest.approx(1.0)
    assert orderings.sign_test(5, 6) == pytest.approx(2 * 7 / 2**6)


def test_pairs_without_both_figures_are_skipped():
    a = seeds(gptfluence=[0.1, 0.2], simfluence=[0.3, float("nan")])
    a["0"]["loss"]["grad_dot"] = {"mse_mean": 1.0, "not_applicable": True}
    assert orderings.paired_log_ratios([a], "gptfluence", "simfluence").size == 1
    assert orderings.paired_log_ratios([a], "gptfluence", "grad_dot").size == 0


@pytest.mark.parametrize(
    ("low", "high", "said"),
    [
        (0.2, 0.9, "holds"),
        (1.1, 3.0, "reversed"),
        (0.5, 2.0, "undecided (interval spans 1)"),
        (float("nan"), float("nan"), "too few seeds"),
    ],
)
def test_verdict(low, high, said):
    assert orderings.verdict(low, high) == said


def test_section_rows_and_lowest_method_per_base_model():
    small = [seeds(gptfluence=[0.1, 0.1, 0.1], simfluence=[0.2, 0.25, 0.3])]
    smol = [seeds(gptfluence=[0.5, 0.6, 0.4], mean_trajectory=[0.2, 0.2, 0.2])]
    text = "\n".join(orderings.section({"small": small, "smol": smol, "none": []}, {}))
    rows = {
        tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
        for line in text.splitlines()
        if line.startswith("| small") or line.startswith("| smol")
    }
    assert set(rows) == {
        ("small", "gptfluence < simfluence"),
        ("smol", "gptfluence < mean_trajectory"),
    }
    assert rows["small", "gptfluence < simfluence"].rstrip().endswith("| holds |")
    # 3 of 3 pairs: two-sided sign test p = 2 / 2**3.
    assert "| 3 | 3 | 0.25 |" in rows["small", "gptfluence < simfluence"]
    assert "| 3 | 0 | 0.25 |" in rows["smol", "gptfluence < mean_trajectory"]
    assert rows["smol", "gptfluence < mean_trajectory"].rstrip().endswith("| reversed |")
    assert "lowest all-steps MSE: mean_trajectory 3 (pairs)" in text
    assert "final-step ρ 0.910 (mean of 3 pairs" in text
    assert "| none" not in text


def test_experiments_md_reads_the_main_tables_only(repo):  # noqa: F811
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    text = report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    reading = text[text.index("## Reading") : text.index("## Fine-tuning")]
    # The fixture's SST-2 seeds: GPTfluence 0.1 / 0.2 / 0.3 against Simfluence's 0.3.
    line = next(x for x in reading.splitlines() if "GPTfluence < Simfluence" in x)
    assert line.startswith("| small GPT-NeoX (CPU protocol) |")
    assert "| 3 | 2 |" in line
    assert "SmolLM2" not in reading.split("Why our figures")[0]
