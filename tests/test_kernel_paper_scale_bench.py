"""benchmarks/kernel_paper_scale.py at a CPU size: the rows, the projection and the last-line
JSON (not timing)."""

import json

import pytest

from benchmarks import kernel_paper_scale as bench
from tests.installed import skip_without_models


def test_tiny_run_prints_rows_and_a_projection(capsys):
    skip_without_models()
    bench.main("--hidden_size 32 --num_layers 1 --num_heads 2 --pool 4 --test 3".split())
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    # The config's own settings: its sequence length and the kernel's projection.
    assert (result["examples"], result["max_len"], result["projection_dim"]) == (7, 256, 8192)
    assert result["factorize"] == "all"
    # Two timed calls, on half the examples (rounded down; at least 2 pool, 1 test) and all.
    assert result["timed_examples"] == [2 + 1, 7]
    assert result["s_per_example"] > 0 and result["fixed_s"] >= 0
    if not result["s_per_example_resolved"]:  # below the noise: the upper bound, said so
        assert result["s_per_example"] == pytest.approx(result["timed_calls_s"][1] / 7, rel=1e-2)
        assert result["fixed_s"] == 0
        assert any("upper bound" in line for line in lines)
    # The config's 200 pool + 200 test examples at the measured rate, plus the fixed cost.
    assert result["protocol_examples"] == 400
    assert result["protocol_minutes"] == pytest.approx(
        (result["fixed_s"] + 400 * result["s_per_example"]) / 60, abs=0.01
    )
    assert result["peak_gb"] > 0 and result["peak_measured"] == "process peak RSS"
    assert any(line.startswith("timed, all") for line in lines)


def test_bad_sizes_are_refused():
    for argv in (["--pool", "1"], ["--test", "0"]):
        with pytest.raises(SystemExit, match="error: --pool must be >= 2 and --test >= 1"):
            bench.main(argv)
    with pytest.raises(SystemExit) as refused:  # argparse: the choices are FACTORIZE
        bench.main(["--factorize", "rows"])
    assert refused.value.code == 2
