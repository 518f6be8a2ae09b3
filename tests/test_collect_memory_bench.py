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
    assert not any("decode_estimate_gib" in r for r in result["rows"])  # nothing decodes
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


def test_decoding_is_estimated_for_the_generation_tasks_and_shrinks_with_the_chunk(capsys):
    """The instruction mixture decodes its test examples every 8 steps: its rows add the
    decoding's estimate, the config's chunk of 40 examples (collect.generation_chunk) or,
    asked for, all 200 at once, whose KV cache is larger."""
    skip_without_models()
    argv = "--hidden_size 32 --num_layers 2 --num_heads 4 --tasks mixture --runs 2"
    chunked, whole = [], []
    for extra, out in (([], chunked), (["--generation_chunk", "0"], whole)):
        bench.main(argv.split() + extra)
        out.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"][0])
    assert (chunked[0]["decode_chunk"], whole[0]["decode_chunk"]) == (40, 200)
    for row in chunked + whole:
        # The group's parameters (an argument of the decoding) and the two AdamW moments
        # that stay on the device meanwhile.
        assert row["decode_estimate_gib"] > 3 * 2 * row["param_gib"]
    assert 0 < chunked[0]["decode_temp_gib"] < whole[0]["decode_temp_gib"]


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
