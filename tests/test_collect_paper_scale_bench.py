"""benchmarks/collect_paper_scale.py at a CPU size: the rows, the projection and the last-line
JSON (not timing)."""

import json

import pytest

from benchmarks import collect_paper_scale as bench


def test_step_flops_counts_training_and_evaluation():
    # 6 per parameter and training token (forward + backward), 2 per evaluated token.
    assert bench.step_flops(10, 3, 5) == 6 * 10 * 3 + 2 * 10 * 5


def test_tiny_run_prints_rows_and_a_projection(capsys):
    bench.main(
        "--hidden_size 32 --num_layers 1 --num_heads 2 --runs 1 --steps 2 --test 8 "
        "--max_len 64".split()
    )
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["n_test"] == 8 and result["runs_per_group"] == 1
    assert result["fp32_s_per_run_step"] > 0 and result["bf16_s_per_run_step"] > 0
    # The projection covers at least the 32 x 96 run-steps at the measured rate.
    best = min(result["fp32_s_per_run_step"], result["bf16_s_per_run_step"])
    assert result["protocol_minutes"] * 60 >= 32 * 96 * best * 0.99
    assert result["bf16_max_abs_deviation"] == pytest.approx(0.0, abs=0.05)
    assert any(line.startswith("fp32, eval every step") for line in lines)
