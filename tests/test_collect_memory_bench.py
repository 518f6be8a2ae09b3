"""benchmarks/collect_memory.py at a tiny model size: XLA's memory estimate of the paper-scale
config's collection group, per task and runs per device, and its last-line JSON."""

import json

import pytest

from benchmarks import collect_memory as bench
from tests.installed import skip_without_models


def test_tiny_estimates_hold_every_runs_state_and_grow_with_the_runs(capsys):
    skip_without_models()
    argv = "--hidden_size 32 --num_layers 2 --num_heads 4 --tasks sst2,boolq --runs 1,2"
    bench.main(argv.split())
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    rows = {(r["task"], r["runs_per_device"]): r for r in result["rows"]}
    assert set(rows) == {("sst2", 1), ("sst2", 2), ("boolq", 1), ("boolq", 2)}
    for (task, runs), row in rows.items():
        # Every run's float32 parameters and both AdamW moments are arguments of the block,
        # beside the token arrays (a few MB here).
        state = 3 * runs * row["param_gib"]
        assert state <= row["argument_gib"] <= state + 0.01, (task, runs)
        assert row["estimate_gib"] >= row["argument_gib"]
        assert row["temp_gib"] > 0
    for task in ("sst2", "boolq"):
        assert rows[task, 2]["estimate_gib"] > rows[task, 1]["estimate_gib"]
    # BoolQ's passages fill the config's 256 tokens; SST-2's sentences do not.
    assert rows["boolq", 1]["pool_len"] == 256 > rows["sst2", 1]["pool_len"]
    assert rows["boolq", 1]["temp_gib"] > rows["sst2", 1]["temp_gib"]
    assert result["largest_gib"] == max(r["estimate_gib"] for r in result["rows"])
    assert any(line.startswith("largest: ") for line in lines)


def test_bad_arguments_are_refused(capsys):
    for argv, why in (
        (["--tasks", "cola"], "--tasks: cola not among"),
        (["--runs", "0"], "--runs must be"),
        (["--runs", "four"], "--runs must be"),
    ):
        with pytest.raises(SystemExit) as refused:
            bench.main(argv)
        assert refused.value.code == 2
        assert why in capsys.readouterr().err
