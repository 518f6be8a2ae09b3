"""LDS, per-trajectory errors and the paired bootstrap of the evaluation harness."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from gptjax import evaluation as mx


def _runs(seed=0, r=16, t=5, n=9):
    rng = np.random.default_rng(seed)
    true = rng.normal(size=(r, t + 1, n))
    pred = true + rng.normal(size=true.shape)
    return pred, true


def test_lds_matches_scipy_per_example():
    pred, true = _runs()
    got = mx.lds(pred[:, -1], true[:, -1])
    want = [spearmanr(pred[:, -1, n], true[:, -1, n]).statistic for n in range(true.shape[2])]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    m = mx.evaluate(pred, true)
    assert m["lds_mean"] == pytest.approx(np.mean(want), rel=1e-10)
    assert m["lds_std"] == pytest.approx(np.std(want), rel=1e-10)
    assert m["across_run_spearman"] == m["lds_mean"]
    assert m["across_run_nan"] == 0


def test_lds_known_answers():
    true = np.arange(20.0).reshape(5, 4)  # every example increases over the runs
    assert np.allclose(mx.lds(true * 3 + 1, true), 1.0)  # monotone: perfect
    assert np.allclose(mx.lds(-true, true), -1.0)  # reversed order
    rows = np.array([0, 1, 2, 3, 4])
    pred = true.copy()
    pred[:, 0] = rows[[1, 0, 2, 3, 4]]  # one swapped pair: ρ = 1 − 6·2/(5·24) = 0.9
    assert mx.lds(pred, true)[0] == pytest.approx(0.9)


def test_lds_nan_safe():
    pred, true = _runs(r=6, n=4)
    p, t = pred[:, -1].copy(), true[:, -1].copy()
    t[0, 0] = np.nan  # an unmeasured run is left out for that example only
    p[1, 1] = np.inf  # a diverged prediction makes that example NaN (not excused)
    p[:, 2] = 7.0  # constant across runs: undefined
    got = mx.lds(p, t)
    assert got[0] == pytest.approx(spearmanr(p[1:, 0], t[1:, 0]).statistic)
    assert math.isnan(got[1]) and math.isnan(got[2]) and math.isfinite(got[3])
    # Mean trajectory / persistence are constant across runs: LDS undefined, counted.
    m = mx.evaluate(mx.mean_trajectory(true[:3], true[3:]), true[3:])
    assert math.isnan(m["lds_mean"]) and m["across_run_nan"] == 4
    # Fewer than 3 runs: no rank information.
    assert np.isnan(mx.lds(p[:2], t[:2])).all()
    with pytest.raises(ValueError):
        mx.lds(p, t[:, :2])


def test_trajectory_mse_is_what_evaluate_averages():
    pred, true = _runs()
    true[:, 2] = np.nan
    e = mx.trajectory_mse(pred, true, start=1)
    seen = np.isfinite(true[:, 1:])
    direct = np.nansum((pred[:, 1:] - true[:, 1:]) ** 2, axis=1) / seen.sum(axis=1)
    np.testing.assert_allclose(e, direct, rtol=1e-12)
    assert mx.evaluate(pred, true)["mse_mean"] == pytest.approx(e.mean(), rel=1e-12)


def test_paired_bootstrap_matches_direct_resampling():
    rng = np.random.default_rng(1)
    a, b = rng.gamma(2.0, size=(8, 10)), rng.gamma(2.0, size=(8, 10))
    res = mx.paired_bootstrap(a, b, n_boot=2000, seed=3)
    d = (a - b).ravel()
    idx = np.random.default_rng(3).integers(0, d.size, size=(2000, d.size))
    lo, hi = np.quantile(d[idx].mean(1), [0.025, 0.975])
    assert res["mean_diff"] == pytest.approx(d.mean())
    assert res["lo"] == pytest.approx(lo) and res["hi"] == pytest.approx(hi)
    assert res["n"] == 80 and res["n_dropped"] == 0
    again = mx.paired_bootstrap(a, b, n_boot=2000, seed=3)
    assert again == res  # seeded


def test_paired_bootstrap_decides_clear_cases():
    rng = np.random.default_rng(2)
    b = rng.uniform(1, 2, size=200)
    clear = mx.paired_bootstrap(b - 0.5 + 0.01 * rng.normal(size=200), b)
    assert clear["a_better"] and not clear["b_better"] and clear["hi"] < 0
    assert clear["mean_diff"] == pytest.approx(-0.5, abs=0.01)
    worse = mx.paired_bootstrap(b + 0.3, b)
    assert worse["b_better"] and worse["lo"] == pytest.approx(0.3)
    noise = mx.paired_bootstrap(b + rng.normal(size=200), b + rng.normal(size=200), seed=0)
    assert noise["lo"] < 0 < noise["hi"] and not (noise["a_better"] or noise["b_better"])
    # A non-finite pair is dropped and counted; all dropped: NaN, no decision.
    a = b.copy()
    a[0] = np.nan
    assert mx.paired_bootstrap(a, b)["n_dropped"] == 1
    empty = mx.paired_bootstrap(np.full(3, np.nan), np.ones(3))
    assert math.isnan(empty["mean_diff"]) and not empty["a_better"]


def test_paired_bootstrap_groups_resample_whole_runs():
    # Differences shared within a run: resampling runs gives a wider interval than
    # resampling trajectories as if they were independent.
    rng = np.random.default_rng(4)
    run_effect = rng.normal(size=(6, 1))
    d = run_effect + 0.05 * rng.normal(size=(6, 30))
    runs = np.broadcast_to(np.arange(6)[:, None], d.shape)
    flat = mx.paired_bootstrap(d, np.zeros_like(d), seed=0)
    grouped = mx.paired_bootstrap(d, np.zeros_like(d), seed=0, groups=runs)
    assert grouped["mean_diff"] == pytest.approx(flat["mean_diff"])
    assert grouped["hi"] - grouped["lo"] > 3 * (flat["hi"] - flat["lo"])
    # One group per pair reduces to the plain bootstrap of the pairs.
    per = mx.paired_bootstrap(d, np.zeros_like(d), seed=5, groups=np.arange(d.size))
    assert per["hi"] - per["lo"] == pytest.approx(flat["hi"] - flat["lo"], rel=0.2)
    with pytest.raises(ValueError):
        mx.paired_bootstrap(d, np.zeros_like(d), groups=np.arange(3))


def test_table_shows_lds_and_notes():
    pred, true = _runs()
    rows = {
        "a": mx.evaluate(pred, true),
        "b": mx.evaluate(true, true) | {"note": "kept its initial state (best epoch 0)"},
        "old": {k: v for k, v in mx.evaluate(pred, true).items() if not k.startswith("lds")},
    }
    md = mx.results_table(rows)
    assert "LDS" in md
    a_line = next(line for line in md.splitlines() if line.startswith("| a |"))
    assert f"{rows['a']['lds_mean']:.3f} ({rows['a']['lds_std']:.3f})" in a_line
    assert "| b * |" in md and "b: kept its initial state (best epoch 0)" in md
    assert f"| {rows['old']['across_run_spearman']:.3f} |" in md  # older rows still render
    assert "lds_mean" in mx.results_csv(rows).splitlines()[0]
    assert "note" in mx.results_csv(rows).splitlines()[0]


def test_reference_predictions_and_regulariser_choice():
    """tests/reference: run k's prediction is −Σ_{i∈S_k} score(i, n); the regulariser is
    chosen on the training runs and scored on the test runs (pure numpy, no torch)."""
    from tests.reference.kronfluence_lds import lds_reference, predict_final

    rng = np.random.default_rng(5)
    p, n, k = 30, 6, 24
    effect = rng.normal(size=(p, n))  # the true per-example effect on the final loss
    subsets = [rng.choice(p, size=12, replace=False) for _ in range(k)]
    y_final = np.stack([effect[s].sum(0) for s in subsets]) + 0.1 * rng.normal(size=(k, n))
    pred = predict_final(-effect, subsets, [0, 3])
    np.testing.assert_allclose(pred[1], effect[subsets[3]].sum(0))
    scores = {0.1: -effect, 1.0: rng.normal(size=(p, n)), 10.0: effect}  # good, noise, reversed
    res = lds_reference(scores, subsets, y_final, range(16), range(16, 24))
    assert res["reg"] == 0.1 and res["train_lds"][0.1] > 0.8 > res["train_lds"][1.0]
    assert res["train_lds"][10.0] < -0.8
    want = mx.lds(predict_final(-effect, subsets, range(16, 24)), y_final[16:])
    assert res["lds_mean"] == pytest.approx(want.mean()) and res["lds_std"] == pytest.approx(
        want.std()
    )
