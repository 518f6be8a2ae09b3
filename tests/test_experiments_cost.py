"""experiments.cost: per-sample FLOPs and latency of every method (the paper's Table 5), on a
tiny workdir collected and fitted here, and its table in EXPERIMENTS.md's Cost section."""

from __future__ import annotations

import contextlib
import io as _io
import json
import math
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cost, report
from tests.installed import skip_without_models

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"
HIDDEN = 16  # the simulator MLPs' sizes here (their FLOPs are checked against a hand count)
K = 3  # baselines.num_checkpoints


def tiny_config():
    c = runpy.run_path(str(TINY))["get_config"]()
    c.stages = "collect,simulate"
    c.collect.save_params = "all"  # TracIn-CP at every step needs every step's parameters
    for section in (c.simulator.gptfluence, c.simulator.simfluence):
        section.epochs = 2
        section.min_steps = 0
        section.warmup_steps = 2
        section.batch_size = 32
    c.simulator.gptfluence.hidden = HIDDEN
    c.simulator.gptfluence.out_dim = HIDDEN
    c.baselines.num_checkpoints = K
    return c


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """(workdir, the JSON record written to --out, the last printed line, the printed text)."""
    skip_without_models()
    from gptjax.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("cost")
    workdir = root / "wd"
    run_pipeline(tiny_config(), workdir)
    out = root / "experiments" / "results" / "cost_tiny.json"
    printed = _io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cost.main(["--workdir", str(workdir), "--out", str(out), "--repeats", "2"]) == 0
    text = printed.getvalue()
    return workdir, json.loads(out.read_text()), text.strip().splitlines()[-1], text


def rows_of(record):
    return {row["name"]: row for row in record["methods"]}


def test_flops_of_reads_every_shape_of_cost_analysis():
    assert cost.flops_of({"flops": 10.0, "bytes accessed": 3.0}) == 10.0
    assert cost.flops_of([{"flops": 4.0}, {"flops": 6.0}]) == 10.0  # older JAX: a list
    assert cost.flops_of(None) is None
    assert cost.flops_of({"flops": -1.0}) is None  # XLA's "could not count"
    assert cost.flops_of({}) is None


def test_scan_bodies_count_once_per_step():
    d = 32

    def f(x, steps):
        def step(c, _):
            return c @ x, None

        return jax.lax.scan(step, jnp.ones((d,), jnp.float32), None, length=steps)[0]

    fn = jax.jit(f, static_argnums=1)
    x = jax.ShapeDtypeStruct((d, d), jnp.float32)
    one, eight = cost.jit_flops(fn, x, 1), cost.jit_flops(fn, x, 8)
    # A d-vector times a d×d matrix: 2·d² FLOPs a step, whatever XLA counts for a loop.
    assert one == pytest.approx(2 * d * d, rel=0.05)
    assert eight == pytest.approx(8 * one, rel=0.05)


def test_last_line_is_the_record(measured):
    _, record, last, text = measured
    assert json.loads(last) == record
    assert "| method | FLOPs / sample |" in text and "per run-step" in text
    assert record["command"].startswith("python -m experiments.cost --workdir ")
    assert record["steps"] == 8 and record["batch_size"] == 2 and record["test_examples"] == 8


def test_every_method_has_positive_flops_and_finite_latencies(measured):
    _, record, _, _ = measured
    rows = rows_of(record)
    assert list(rows) == [
        "gptfluence",
        "gptfluence+features",
        "simfluence",
        "tracin_cp_all",
        "tracin_cp_k",
        "grad_dot",
    ]
    for name, row in rows.items():
        assert "unavailable" not in row, name
        for part in ("single", "amortised"):
            m = row[part]
            assert m["flops"] > 0 and math.isfinite(m["flops"]), (name, part)
            assert 0 < m["latency_min_s"] <= m["latency_s"] < 60, (name, part)
        # Predicting all 8 test examples at once shares work between them.
        assert row["amortised"]["flops"] < row["single"]["flops"], name
        assert row["amortised"]["test_examples"] == 8
    assert [rows[n]["needs_trained_run"] for n in rows] == [False] * 3 + [True] * 3
    assert rows["tracin_cp_k"]["label"] == f"TracIn-CP ({K} checkpoints)"


def test_simulator_flops_match_a_hand_count_and_grow_with_the_steps(measured):
    workdir, record, _, _ = measured
    rows = rows_of(record)
    dim = np.load(next(workdir.glob("features.*.npy"))).shape[1]
    u, n = record["distinct_train_examples"], record["test_examples"]
    # GPTfluence-dot, order 1: two MLPs (α_1, β) dim→16→16 on every distinct training example
    # of the run and on the test example(s); the products, table and scan come on top.
    per_example = 2 * 2 * (dim * HIDDEN + HIDDEN * HIDDEN)
    single, amortised = rows["gptfluence"]["single"], rows["gptfluence"]["amortised"]
    assert per_example * (u + 1) <= single["flops"] <= 1.1 * per_example * (u + 1)
    assert per_example * (u + n) <= amortised["flops"] * n <= 1.1 * per_example * (u + n)
    for name in ("gptfluence", "simfluence"):
        by_steps = rows[name]["flops_by_steps"]
        assert [h["steps"] for h in by_steps] == [8, 16]
        assert by_steps[0]["flops"] == pytest.approx(rows[name]["single"]["flops"])
        assert by_steps[1]["flops"] > by_steps[0]["flops"]
    # Simfluence has no MLP: its per-step work is most of its cost, so 2T costs far more.
    sim = rows["simfluence"]["flops_by_steps"]
    assert sim[1]["flops"] > 1.5 * sim[0]["flops"]
    # The encoder run from text costs far more than the rollout from cached features.
    with_features = rows["gptfluence+features"]
    assert with_features["single"]["flops"] > 100 * single["flops"]
    assert with_features["single"]["flops"] == pytest.approx(
        single["flops"] + with_features["single"]["encoder"]["flops"]
    )


def test_rollout_flops_are_linear_in_the_horizon(measured):
    from gptjax.pipeline import queries

    workdir, record, _, _ = measured
    ow = queries.open_workdir(workdir)
    fitted = ow.simulator("loss", "gptfluence")
    run = record["run"]
    curriculum, lr = ow.dynamics.curricula[run : run + 1], ow.dynamics.lr[run : run + 1]
    y0 = ow.metric_values("loss")[run : run + 1, :1, :1]
    flops = []
    for reps in (1, 2, 3):
        cur = np.concatenate([curriculum] * reps, axis=1)
        rates = np.concatenate([lr] * reps, axis=1)
        call = fitted.rollout_call(cur, y0, np.array([0]), lr=rates)
        flops.append(cost.rollout_flops(call))
    step_cost = flops[1] - flops[0]
    assert step_cost > 0
    assert flops[2] - flops[1] == pytest.approx(step_cost, rel=0.05)


def test_gradient_methods_count_their_checkpoints_and_gradients(measured):
    _, record, _, _ = measured
    rows = rows_of(record)
    t, b, n = record["steps"], record["batch_size"], record["test_examples"]
    every, k, final = (rows[m]["single"] for m in ("tracin_cp_all", "tracin_cp_k", "grad_dot"))
    assert (every["checkpoints"], k["checkpoints"], final["checkpoints"]) == (t, K, 1)
    # All steps: each step's batch (distinct ids) and the test example at θ_{t-1}.
    assert every["gradients"] == t * b + t and every["inner_products"] == t * b
    assert rows["tracin_cp_all"]["amortised"]["totals"]["inner_products"] == t * b * n
    # Fewer checkpoints, fewer gradients: less work.
    assert every["flops"] > k["flops"] > final["flops"]
    assert final["gradients"] == record["distinct_train_examples"] + 1


def test_collection_cost_comes_from_the_timing_files(measured):
    workdir, record, _, _ = measured
    c = record["collection"]
    assert c["run_steps"] == 6 * record["steps"]  # the tiny config's 6 runs
    walls = {
        tuple(t["group"]): t["wall_s"]
        for t in (json.loads(p.read_text()) for p in (workdir / "runs").glob("*.timing.json"))
    }
    assert c["wall_s"] == pytest.approx(sum(walls.values()))
    assert c["seconds_per_run_step"] == pytest.approx(c["wall_s"] / c["run_steps"])
    assert c["seconds_per_run"] == pytest.approx(c["seconds_per_run_step"] * record["steps"])


def test_report_renders_the_cost_table(measured):
    _, record, _, _ = measured
    repo = Path(measured[0]).parent
    text = report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    section = text[text.index("### Per-sample simulation cost") :]
    assert report.NOT_MEASURED not in section
    rows = rows_of(record)
    one, many = rows["gptfluence"]["single"], rows["gptfluence"]["amortised"]
    assert (
        f"| GPTfluence | {report.fmt_flops(one['flops'])} | {report.fmt_seconds(one['latency_s'])}"
        f" | {report.fmt_flops(many['flops'])} | {report.fmt_seconds(many['latency_s'])} | no |"
    ) in section
    assert f"| TracIn-CP ({K} checkpoints) | " in section
    assert "| Grad-Dot | " in section and " | yes |" in section
    assert "`experiments/results/cost_tiny.json`" in section
    per_step = report.fmt_seconds(record["collection"]["seconds_per_run_step"])
    assert f"Collecting the runs behind every method: {per_step} per run-step" in section
    assert "Rollout FLOPs for one sample at 8 / 16 steps" in section


def test_report_without_a_cost_file_gives_the_command(tmp_path):
    text = report.render(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS)
    section = text[text.index("## Cost") :]
    assert f"*{report.NOT_MEASURED}*" in section
    assert report.COST_COMMAND in section


def test_sections_read_the_snapshot_not_the_workdir(tmp_path):
    """A hand-made record (numbers chosen here) renders cell by cell."""
    record = {
        "workdir": "workdirs/x",
        "run": 3,
        "steps": 24,
        "batch_size": 4,
        "distinct_train_examples": 32,
        "test_examples": 48,
        "metric": "loss",
        "device": "cpu: cpu",
        "cpu_count": 2,
        "repeats": 5,
        "methods": [
            {
                "name": "grad_dot",
                "label": "Grad-Dot",
                "needs_trained_run": True,
                "single": {"flops": 2.5e9, "latency_s": 0.0123},
                "amortised": {"flops": 1.25e8, "latency_s": 2.5e-4},
                "note": "a note",
            },
            {"name": "simfluence", "label": "Simfluence", "unavailable": "not fitted"},
        ],
        "collection": None,
    }
    target = tmp_path / report.SNAPSHOTS / "cost_x.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(record))
    lines = report.simulation_cost_section(tmp_path, report.SNAPSHOTS)
    text = "\n".join(lines)
    assert "| Grad-Dot | 2.5e+09 | 12.3 ms | 1.25e+08 | 250 µs | yes |" in text
    assert "| Simfluence | not available: not fitted |" in text
    assert "Grad-Dot: a note." in text
    assert "Collection cost: no run timing files in the workdir." in text
