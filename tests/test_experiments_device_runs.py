"""experiments/device_runs.py: the paper-scale timing read from device_check logs."""

from pathlib import Path

import pytest

from experiments import device_runs

LOG = """=== demo: python3 -m gptjax.main --config configs/demo.py
=== demo: rc=0 in 10 s
=== paper_scale: python3 -m benchmarks.collect_paper_scale --runs 4 --steps 5
model: 405M parameters (d_model 1024, 24 layers); gpu (NVIDIA H200); 200 test examples, max_len 256
fp32, eval every step: 0.050 s per run-step (first group 60.0 s, total 80.0 s)
bf16 compute, fp32 weights: 0.025 s per run-step (first group 30.0 s, total 40.0 s)
=== paper_scale: rc=0 in 125 s
"""


def test_parse_reads_the_command_rows_and_projection():
    found = device_runs.parse_paper_scale(LOG)
    assert (found["runs"], found["steps"], found["rc"], found["seconds"]) == (4, 5, 0, 125)
    assert found["model"]["device"] == "NVIDIA H200"
    fp32, bf16 = found["rows"]
    # second group = 4 runs x 5 steps x 0.05 s = 1 s; overhead = (60 - 1) + (80 - 60 - 1) = 78 s
    assert fp32["overhead_s"] == pytest.approx(78.0)
    assert fp32["protocol_s"] == pytest.approx(78.0 + 32 * 96 * 0.05)
    assert bf16["overhead_s"] == pytest.approx(29.5 + 9.5)


def test_parse_finds_nothing_without_the_step():
    assert device_runs.parse_paper_scale("=== demo: python3 x\n=== demo: rc=0 in 1 s\n") is None


def test_lines_quote_each_log_and_say_when_the_step_was_cut(tmp_path: Path):
    folder = tmp_path / device_runs.RESULTS / "h200_2026-01-01"
    folder.mkdir(parents=True)
    cut = LOG.replace(
        "bf16 compute, fp32 weights: 0.025 s per run-step (first group 30.0 s, total 40.0 s)\n", ""
    ).replace("rc=0 in 125 s", "rc=124 in 150 s")
    (folder / "device_check_2.log").write_text(cut)
    text = "\n".join(device_runs.paper_scale_lines(tmp_path))
    assert "benchmarks/results/h200_2026-01-01/device_check_2.log" in text
    assert "| fp32, eval every step | 0.050 | 60 s | 3.9 min |" in text
    assert "stopped at its time limit, 150 s" in text
    assert device_runs.paper_scale_lines(tmp_path / "empty") == []


def test_the_committed_logs_parse():
    repo = Path(__file__).resolve().parent.parent
    logs = sorted((repo / device_runs.RESULTS).glob("*/device_check_*.log"))
    found = [f for f in map(lambda p: device_runs.parse_paper_scale(p.read_text()), logs) if f]
    assert found and all(f["rows"] for f in found)
