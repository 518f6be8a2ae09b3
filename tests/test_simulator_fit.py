"""Fitting on dynamics from a known GPTfluence-form process and the fit options."""

import numpy as np
import pytest

from gptjax.evaluation import evaluate, mean_trajectory, persistence
from simulator import FittedSimulator, fit
from simulator.synthetic import make_synthetic

TRAIN, VAL, TEST = np.arange(16), np.arange(16, 20), np.arange(20, 40)
SMALL = {"hidden": 32, "out_dim": 32, "lr": 3e-3, "warmup_steps": 50, "min_steps": 800}


@pytest.fixture(scope="module")
def syn():
    return make_synthetic(
        n_runs=40, n_test=32, n_pool=64, subset_size=48, epochs=3, dim=16, order=1, seed=0
    )


@pytest.fixture(scope="module")
def fitted(syn):
    cfg = dict(SMALL, epochs=40, patience=100)
    return fit(
        "gptfluence", syn.curricula, syn.y, syn.train_features, syn.test_features, TRAIN, VAL, cfg
    )


def test_synthetic_is_in_the_model_class(syn):
    assert syn.representable
    assert syn.curricula.shape == (40, 36, 4) and syn.y.shape == (40, 37, 32)
    np.testing.assert_array_equal(syn.y[:, 0], np.broadcast_to(syn.y[0, 0], (40, 32)))


def test_fit_reaches_noise_floor(syn, fitted):
    """All-steps MSE within 1.5× of the noise floor, across-run ρ > 0.9."""
    y = syn.y[TEST]
    pred = fitted.rollout(syn.curricula[TEST], y[:, 0])
    got = evaluate(pred, y)
    # Noise floor: the true process itself, rolled out without its noise from the same y_0.
    floor = evaluate(syn.oracle(syn.curricula[TEST], y[:, 0]), y)
    print(
        f"\nfitted MSE {got['mse_mean']:.5f}  noise floor {floor['mse_mean']:.5f}  "
        f"ratio {got['mse_mean'] / floor['mse_mean']:.3f}  across-run ρ "
        f"{got['across_run_spearman']:.3f} (oracle {floor['across_run_spearman']:.3f})"
    )
    assert got["mse_mean"] <= 1.5 * floor["mse_mean"]
    assert got["across_run_spearman"] > 0.9
    assert got["mse_mean"] < 0.1 * evaluate(mean_trajectory(syn.y[TRAIN], y), y)["mse_mean"]
    assert got["mse_mean"] < 0.01 * evaluate(persistence(y), y)["mse_mean"]
    best = [h for h in fitted.history if "best_epoch" in h][0]
    assert best["best_epoch"] > 0


def test_rollout_options(syn, fitted):
    c, y = syn.curricula[TEST[:3]], syn.y[TEST[:3]]
    full = fitted.rollout(c, y[:, 0])
    assert full.shape == (3, 37, 32)
    sub = fitted.rollout(c, y[:, 0, [3, 7]], test_ids=[3, 7])
    np.testing.assert_allclose(sub, full[:, :, [3, 7]], rtol=1e-5, atol=1e-6)
    given = fitted.rollout(c, y[:, :5])  # the first 5 true values given
    np.testing.assert_array_equal(given[:, :5], y[:, :5])
    # New test examples by features: same features → same trajectories.
    new = fitted.rollout(c, y[:, 0, :4], test_features=syn.test_features[:4])
    np.testing.assert_allclose(new, full[:, :, :4], rtol=1e-5, atol=1e-6)
    # A curriculum never seen (a reversed one, with a shorter batch) runs too.
    odd = c[:, ::-1, :3].copy()
    assert np.isfinite(fitted.rollout(odd, y[:, 0])).all()
    # The public hook is the very call `rollout` makes: timing / costing it measures that.
    call = fitted.rollout_call(c, y[:, 0, [3, 7]], test_ids=[3, 7])
    np.testing.assert_array_equal(call.finish(call()), sub)
    assert call.trace().lower().compile().cost_analysis() is not None


def test_save_restore_roundtrip(syn, fitted, tmp_path):
    fitted.save(tmp_path / "sim")
    assert FittedSimulator.exists(tmp_path / "sim")
    back = FittedSimulator.restore(tmp_path / "sim")
    c, y0 = syn.curricula[TEST[:2]], syn.y[TEST[:2], 0]
    np.testing.assert_array_equal(back.rollout(c, y0), fitted.rollout(c, y0))
    assert back.config == fitted.config and back.history == fitted.history


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("gptfluence", {"variant": "concat", "hidden": 32, "out_dim": 16}),
        ("gptfluence", {"rollout_k": 3, "batch_reduce": "mean", "init": "flax"}),
        ("gptfluence", {"order": 3, "pad": "zero"}),
        ("simfluence", {"lr": 1e-2, "weight_decay": 0.0}),
    ],
)
def test_variants_learn(syn, kind, extra):
    cfg = dict(SMALL, epochs=6, patience=100, **extra)
    f = fit(kind, syn.curricula, syn.y, syn.train_features, syn.test_features, TRAIN, VAL, cfg)
    y = syn.y[TEST[:8]]
    got = evaluate(f.rollout(syn.curricula[TEST[:8]], y[:, 0]), y)
    base = evaluate(mean_trajectory(syn.y[TRAIN], y), y)
    assert got["mse_mean"] < base["mse_mean"], (kind, extra, got["mse_mean"], base["mse_mean"])


def test_checkpoint_interval_and_unmeasured_steps(syn):
    """Trajectories observed every 4 steps only (as an option, or as NaN in the data)."""
    cfg = dict(SMALL, epochs=12, patience=100)
    y_sparse = syn.y.copy()
    keep = (np.arange(37) % 4 == 0) | (np.arange(37) == 36)
    y_sparse[:, ~keep] = np.nan
    y = syn.y[TEST[:8]]
    base = evaluate(mean_trajectory(syn.y[TRAIN], y), y)["mse_mean"]
    for data, extra in ((syn.y, {"observe_every": 4}), (y_sparse, {})):
        f = fit(
            "gptfluence",
            syn.curricula,
            data,
            syn.train_features,
            syn.test_features,
            TRAIN,
            VAL,
            dict(cfg, **extra),
        )
        got = evaluate(f.rollout(syn.curricula[TEST[:8]], y[:, 0]), y)["mse_mean"]
        assert got < 0.5 * base


def test_learning_rate_conditioning_and_anchor(syn, tmp_path):
    lr = np.linspace(2e-3, 1e-4, 36)[None].repeat(40, 0)
    cfg = dict(SMALL, epochs=4, min_steps=300, patience=100)
    c, y = syn.curricula[TEST[:4]], syn.y[TEST[:4]]
    plain = fit(
        "gptfluence", syn.curricula, syn.y, syn.train_features, syn.test_features, TRAIN, VAL, cfg
    )
    # Constant rates: scaling by lr / max(lr) = 1 changes nothing.
    same = fit(
        "gptfluence",
        syn.curricula,
        syn.y,
        syn.train_features,
        syn.test_features,
        TRAIN,
        VAL,
        dict(cfg, lr_scale=True),
        lr=np.full((40, 36), 3e-4),
    )
    np.testing.assert_allclose(same.rollout(c, y[:, 0]), plain.rollout(c, y[:, 0]), rtol=1e-5)
    scaled = fit(
        "gptfluence",
        syn.curricula,
        syn.y,
        syn.train_features,
        syn.test_features,
        TRAIN,
        VAL,
        dict(cfg, lr_scale=True),
        lr=lr,
    )
    assert scaled.lr_ref == pytest.approx(2e-3)
    np.testing.assert_allclose(scaled.rollout(c, y[:, 0]), scaled.rollout(c, y[:, 0], lr=lr[:4]))
    with pytest.raises(ValueError):
        scaled.rollout(c[:, :10], y[:, 0])  # another length needs its schedule
    assert np.isfinite(scaled.rollout(c[:, :10], y[:, 0], lr=lr[0, :10])).all()
    anchored = fit(
        "gptfluence",
        syn.curricula,
        syn.y,
        syn.train_features,
        syn.test_features,
        TRAIN,
        VAL,
        dict(cfg, anchor="mean"),
    )
    pred = anchored.rollout(c, y[:, 0])
    base = evaluate(mean_trajectory(syn.y[TRAIN], y), y)["mse_mean"]
    assert evaluate(pred, y)["mse_mean"] < base
    anchored.save(tmp_path / "a")
    back = FittedSimulator.restore(tmp_path / "a")
    np.testing.assert_array_equal(back.anchor_traj, anchored.anchor_traj)
    np.testing.assert_allclose(back.rollout(c, y[:, 0]), pred, rtol=1e-6)
    call = anchored.rollout_call(c, y[:, 0])  # the anchor is added by `finish`
    np.testing.assert_array_equal(call.finish(call()), pred)
    with pytest.raises(ValueError):
        anchored.rollout(c[:, :10], y[:, 0])


def test_invalid_runs_are_skipped():
    s = make_synthetic(n_runs=12, n_test=8, n_pool=24, subset_size=16, dim=8, n_invalid=3, seed=2)
    assert (~s.valid).sum() == 3
    f = fit(
        "gptfluence",
        s.curricula,
        s.y,
        s.train_features,
        s.test_features,
        np.arange(9),
        np.arange(9, 12),
        dict(SMALL, epochs=2),
        valid=s.valid,
    )
    assert np.isfinite(f.history[-2]["train_loss"])
    with pytest.raises(ValueError):
        fit(
            "gptfluence",
            s.curricula,
            s.y,
            s.train_features,
            s.test_features,
            np.nonzero(~s.valid)[0],
            [],
            SMALL,
            valid=s.valid,
        )
    with pytest.raises(ValueError):
        fit(
            "gptfluence",
            s.curricula,
            s.y,
            s.train_features,
            s.test_features,
            [0],
            [1],
            dict(SMALL, order=11),
        )
