"""benchmarks/simulator_quality.py's core on a tiny collection: the table and the last-line
JSON have the keys and shape the issue asks for (not timing)."""

import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import simulator_quality as bench

TINY = Path(__file__).parent / "configs" / "tiny.py"


def _tiny():
    spec = importlib.util.spec_from_file_location("tiny_config", TINY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.collect.num_runs = 8
    c.collect.runs_per_device = 4
    c.collect.save_params = "all"
    c.collect.split = "4,1,3"  # 3 test runs: the smallest with a rank correlation
    for section in (c.simulator.gptfluence, c.simulator.simfluence):
        section.epochs = 2
        section.min_steps = 20
        section.warmup_steps = 2
    c.simulator.gptfluence.hidden = 8
    c.simulator.gptfluence.out_dim = 8
    c.simulator.kernel_projection_dim = 64  # gptfluence_kernel's features
    return c


def test_quality_benchmark_json_shape(tmp_path):
    out = io.StringIO()
    result = bench.run(["demo"], [0], tmp_path, references=(), configs={"demo": _tiny()}, out=out)
    text = out.getvalue()
    assert set(result) == {"tasks"} and list(result["tasks"]) == ["demo"]
    entry = result["tasks"]["demo"]
    assert tuple(entry) == bench.JSON_KEYS
    for key in (
        "gptfluence_mse",
        "simfluence_mse",
        "mean_trajectory_mse",
        "gptfluence_kernel_mse",
        "gradient_kernel_mse",
    ):
        assert isinstance(entry[key], float) and entry[key] >= 0
    assert entry["kronfluence_lds"] is None and entry["trak_lds"] is None  # not run
    assert entry["gradient_kernel_lds_minus_kronfluence"] is None
    for key in (
        "gptfluence_lds",
        "simfluence_lds",
        "tracin_lds",
        "gptfluence_kernel_lds",
        "gradient_kernel_lds",
    ):
        assert entry[key] is None or -1 <= entry[key] <= 1
    line = json.dumps(result, allow_nan=False)  # what main prints last: strict JSON
    assert json.loads(line) == result
    for method in bench.METHODS + bench.REFERENCES:
        assert f"| {method} |" in text
    assert "gptfluence_vs_mean_trajectory" in text and "95% CI" in text
    assert "gptfluence_kernel_vs_simfluence" in text and "| gptfluence_kernel |" in text
    assert "gradient_kernel_vs_mean_trajectory" in text and "| gradient_kernel |" in text
    assert (tmp_path / "demo" / "seed_0" / "results" / "baselines_predictions.npz").is_file()


def test_summary_over_seeds():
    def seed(mse, lds):
        rows = {m: {"mse_mean": mse, "lds_mean": lds} for m in bench.METHODS}
        return {"rows": rows, "references": {"kronfluence": {"lds_mean": lds}, "trak": {}}}

    table = bench.summarise([seed(1.0, 0.2), seed(3.0, float("nan")), seed(2.0, 0.4)])
    assert table["gptfluence"]["mse_mean"] == pytest.approx([2.0, math.sqrt(2 / 3)])
    assert table["gptfluence"]["lds_mean"] == pytest.approx([0.3, 0.1])  # NaN left out
    assert table["trak"]["lds_mean"] is None
    entry = bench.task_json(table)
    assert entry["kronfluence_lds"] == pytest.approx(0.3) and entry["trak_lds"] is None


def test_lds_against_a_reference_is_paired_by_test_example_and_pooled_over_seeds():
    rng = np.random.default_rng(0)
    per_seed = []
    for _ in range(3):
        ref = rng.uniform(0.2, 0.6, 40)
        per_seed.append(
            {
                "rows": {"gradient_kernel": {"mse_mean": 0.1, "lds_mean": float(ref.mean() + 0.1)}},
                "references": {"kronfluence": {"lds_mean": float(ref.mean())}, "trak": {}},
                # the kernel 0.1 above Kronfluence on every example; TRAK never ran
                "lds_per_example": {
                    "gradient_kernel": (ref + 0.1).tolist(),
                    "kronfluence": ref.tolist(),
                },
            }
        )
    table = bench.summarise(per_seed)
    d, lo, hi = table["gradient_kernel"]["lds_minus_kronfluence"]
    assert d == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    assert "lds_minus_trak" not in table["gradient_kernel"]
    entry = bench.task_json(table)
    assert entry["gradient_kernel_lds_minus_kronfluence"] == pytest.approx([0.1, 0.1, 0.1])
    assert entry["gradient_kernel_lds_minus_trak"] is None
