"""The evaluation harness: values on hand-made arrays, NaN handling, baselines, tables."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from gptjax import evaluation as mx


def _data(seed=0, r=5, t=6, n=7):
    rng = np.random.default_rng(seed)
    true = rng.normal(size=(r, t + 1, n)).astype(np.float32)
    pred = true + 0.1 * rng.normal(size=true.shape).astype(np.float32)
    return pred, true


def test_evaluate_matches_direct_computation():
    pred, true = _data()
    m = mx.evaluate(pred, true, start=1)
    err = (pred[:, 1:] - true[:, 1:]).astype(np.float64)
    per_traj = (err**2).mean(1)
    assert m["mse_mean"] == pytest.approx(per_traj.mean(), rel=1e-6)
    assert m["mse_std"] == pytest.approx(per_traj.std(), rel=1e-6)
    assert m["mae_mean"] == pytest.approx(np.abs(err).mean(), rel=1e-6)
    finals = [spearmanr(pred[r, -1], true[r, -1]).statistic for r in range(5)]
    assert m["final_spearman_mean"] == pytest.approx(np.mean(finals), rel=1e-6)
    assert m["final_spearman_std"] == pytest.approx(np.std(finals), rel=1e-6)
    across = [spearmanr(pred[:, -1, n], true[:, -1, n]).statistic for n in range(7)]
    assert m["across_run_spearman"] == pytest.approx(np.mean(across), rel=1e-6)
    assert m["n_trajectories"] == 35 and m["n_runs"] == 5


def test_start_skips_given_steps():
    pred, true = _data()
    pred[:, :3] = 100.0  # given steps: not scored with start=3
    m = mx.evaluate(pred, true, start=3)
    assert m["mse_mean"] < 0.1


def test_spearman_ties_and_constants_are_nan_safe():
    assert mx.spearman(np.array([1, 2, 2, 3.0]), np.array([1, 2, 2, 3.0])) == pytest.approx(1.0)
    assert math.isnan(mx.spearman(np.ones(4), np.arange(4.0)))
    _, true = _data()
    const = np.ones_like(true)  # a predictor that says nothing
    m = mx.evaluate(const, true)
    assert math.isnan(m["final_spearman_mean"]) and m["final_spearman_nan"] == 5
    assert math.isnan(m["across_run_spearman"]) and m["across_run_nan"] == 7
    assert math.isfinite(m["mse_mean"])
    table = mx.results_table({"const": m})
    assert "nan" in table


def test_unmeasured_steps_are_skipped_and_diverged_predictions_reported():
    pred, true = _data()
    true[:, 2:5] = np.nan  # e.g. BLEU measured every few steps
    m = mx.evaluate(pred, true)
    assert math.isfinite(m["mse_mean"]) and m["n_nonfinite"] == 0
    pred[0, 1, 0] = np.inf
    m = mx.evaluate(pred, true)
    assert m["n_nonfinite"] == 1 and not math.isfinite(m["mse_mean"])


def test_baselines():
    _, true = _data()
    p = mx.persistence(true, start=1)
    assert np.all(p[:, 3] == true[:, 0])
    p2 = mx.persistence(true, start=2)
    assert np.all(p2[:, 1] == true[:, 1]) and np.all(p2[:, 4] == true[:, 1])
    train = true[:3]
    mt = mx.mean_trajectory(train, true[3:])
    np.testing.assert_allclose(mt[:, 2], np.broadcast_to(train[:, 2].mean(0), (2, 7)), rtol=1e-6)
    np.testing.assert_array_equal(mt[:, 0], true[3:, 0])
    train = train.copy()
    train[0, 4] = np.nan  # NaN-aware mean
    assert np.isfinite(mx.mean_trajectory(train, true[3:])[:, 4]).all()


def test_results_table_and_csv():
    pred, true = _data()
    rows = {"a": mx.evaluate(pred, true), "persistence": mx.evaluate(mx.persistence(true), true)}
    md = mx.results_table(rows)
    assert md.count("\n") == 4 and "| a |" in md and "all-steps MSE" in md
    csv = mx.results_csv(rows)
    assert csv.splitlines()[0].startswith("method,mse_mean,mse_std")
    assert len(csv.splitlines()) == 3


def test_shape_errors():
    pred, true = _data()
    with pytest.raises(ValueError):
        mx.evaluate(pred[:, :-1], true)
    with pytest.raises(ValueError):
        mx.evaluate(pred, true, start=true.shape[1])
