"""GPTfluence's gradient kernel (``FitConfig.kernel_dim``, the ``gptfluence_kernel``
simulator): the model's two computations agree, the untrained model is the accumulated
kernel, the fitted scale recovers a known one, a fit beats the mean trajectory on dynamics
the kernel drives, save / restore, and the pipeline runs it on the tiny config."""

from __future__ import annotations

import re
import runpy
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax import paths
from gptjax.evaluation import evaluate, mean_trajectory
from simulator import FitConfig, FittedSimulator, fit, method_config
from simulator import rollout as rl
from simulator.gptfluence import GPTfluenceDot
from simulator.training import kernel_unit, observed_steps

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"


def _features(p=9, n=5, d_mlp=6, d_kernel=4, seed=0):
    rng = np.random.default_rng(seed)
    tr = rng.standard_normal((p, d_mlp + d_kernel)).astype(np.float32)
    te = rng.standard_normal((n, d_mlp + d_kernel)).astype(np.float32)
    return jnp.asarray(tr), jnp.asarray(te)


@pytest.mark.parametrize("mlp", [True, False])
def test_transition_coefs_agree_with_the_table(mlp):
    tr, te = _features()
    model = GPTfluenceDot(2, 10, 8, 5, rngs=nnx.Rngs(0), kernel_dim=4, kernel_unit=0.3, mlp=mlp)
    model.kernel_scale.value = jnp.asarray(1.7)  # as after training
    table = np.asarray(jax.jit(model.table)(tr, te))
    assert table.shape == (3, 9, 5)
    # Row 2 is an all-empty batch: its coefficients are all 0, as a table reduction gives.
    ids = jnp.array([[[0, 3, -1], [6, 6, 1], [-1, -1, -1]], [[2, -1, -1], [5, 4, 0], [8, 7, 7]]])
    test_ids = jnp.array([4, 1])
    for mode in ("pool", "gather"):
        coefs = jax.jit(partial(model.transition_coefs, batch_reduce="mean", mode=mode))
        got = np.asarray(coefs(tr, te, ids, test_ids))
        for m in range(2):
            for k in range(3):
                sel = [i for i in np.asarray(ids[m, k]) if i >= 0]
                want = table[:, sel, int(test_ids[m])].mean(1) if sel else np.zeros(3)
                np.testing.assert_allclose(got[m, k], want, rtol=1e-5, atol=1e-6)


def test_the_kernel_alone_is_the_accumulated_gradient_inner_products():
    """Without MLPs: α_1 = 1, α_2 = 0, β = γ·u·⟨φ_i, φ'⟩, so a rollout adds, at every step,
    s_t · γ·u · mean over the batch of the kernel to the previous value."""
    tr, te = _features()
    model = GPTfluenceDot(2, 10, 8, 5, rngs=nnx.Rngs(0), kernel_dim=4, kernel_unit=0.3, mlp=False)
    table = np.asarray(model.table(tr, te))
    kern = np.asarray(tr[:, 6:], np.float64) @ np.asarray(te[:, 6:], np.float64).T
    np.testing.assert_allclose(table[0], 1.0)
    np.testing.assert_allclose(table[1], 0.0)
    np.testing.assert_allclose(table[2], 0.3 * kern, rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(1)
    curricula = rng.integers(0, 9, size=(2, 6, 3)).astype(np.int32)
    scale = rng.uniform(0.2, 1.0, size=(2, 6)).astype(np.float32)
    y0 = rng.uniform(1, 2, size=(2, 5)).astype(np.float32)
    got = rl.rollout_table(
        jnp.asarray(table), jnp.asarray(curricula), jnp.asarray(y0[:, None]), order=2,
        batch_reduce="mean", scale=jnp.asarray(scale),
    )  # fmt: skip
    steps = kern[curricula].mean(2) * scale[..., None] * 0.3  # [R, T, N]
    want = y0[:, None] + np.concatenate([np.zeros((2, 1, 5)), np.cumsum(steps, 1)], 1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def _kernel_dynamics(u_true=-0.05, runs=40, steps=12, pool=30, n=8, d=6, noise=0.01, seed=0):
    """Runs whose losses follow a shared trajectory plus u_true times the accumulated kernel
    of their curricula (and noise): the process gptfluence_kernel assumes."""
    rng = np.random.default_rng(seed)
    phi_p = rng.standard_normal((pool, d))
    phi_p -= phi_p.mean(0)
    phi_n = rng.standard_normal((n, d))
    curricula = rng.integers(0, pool, size=(runs, steps, 4)).astype(np.int32)
    lr = np.broadcast_to(np.linspace(1e-3, 1e-4, steps), (runs, steps)).copy()
    scale = lr / lr.max()
    per_step = (phi_p @ phi_n.T)[curricula].mean(2) * scale[..., None]
    shared = 2.0 - 0.05 * np.arange(steps + 1)[:, None] * np.linspace(0.5, 1.5, n)
    cum = np.concatenate([np.zeros((runs, 1, n)), np.cumsum(per_step, 1)], 1)
    y = shared + u_true * cum + noise * rng.standard_normal((runs, steps + 1, n))
    y[:, 0] = shared[0]
    mlp_feats = (rng.standard_normal((pool, 5)), rng.standard_normal((n, 5)))
    train = np.concatenate([mlp_feats[0], phi_p], 1).astype(np.float32)
    test = np.concatenate([mlp_feats[1], phi_n], 1).astype(np.float32)
    return curricula, y.astype(np.float32), lr, train, test, scale


def test_kernel_unit_recovers_the_scale_of_the_process():
    curricula, y, _, train, test, scale = _kernel_dynamics(u_true=-0.05)
    runs = np.arange(30)
    obs = observed_steps(y, runs)
    u = kernel_unit(y, curricula, scale, train[:, 5:], test[:, 5:], runs, obs)
    assert u == pytest.approx(-0.05, rel=0.05)
    # Sparse observations (every 4th step) still see the levels.
    obs4 = observed_steps(y, runs, every=4)
    assert kernel_unit(y, curricula, scale, train[:, 5:], test[:, 5:], runs, obs4) == (
        pytest.approx(-0.05, rel=0.05)
    )
    # A kernel that is all zero carries nothing: the unit stays 1.
    zeros = np.zeros_like(train[:, 5:])
    assert kernel_unit(y, curricula, scale, zeros, test[:, 5:], runs, obs) == 1.0


@pytest.mark.parametrize("mlp", [False, True])
def test_fit_beats_the_mean_trajectory_on_kernel_driven_runs(mlp, tmp_path):
    curricula, y, lr, train, test, _ = _kernel_dynamics()
    kind, cfg = method_config("gptfluence_kernel", {"hidden": 8, "out_dim": 8}, {}, kernel_dim=6)
    assert kind == "gptfluence"
    assert (cfg.anchor, cfg.batch_reduce, cfg.lr_scale, cfg.kernel_dim) == ("mean", "mean", True, 6)
    cfg = FitConfig(**(vars(cfg) | {"kernel_mlp": mlp, "epochs": 3, "min_steps": 0}))
    fitted = fit("gptfluence", curricula, y, train, test, range(24), range(24, 30), cfg, lr=lr)
    held = np.arange(30, 40)
    pred = fitted.rollout(curricula[held], y[held, 0], lr=lr[held])
    mse = evaluate(pred, y[held])["mse_mean"]
    base = evaluate(mean_trajectory(y[:24], y[held]), y[held])["mse_mean"]
    assert mse < 0.2 * base, (mse, base)
    fitted.save(tmp_path / "sim")
    again = FittedSimulator.restore(tmp_path / "sim")
    assert again.kernel_unit == fitted.kernel_unit != 1.0
    np.testing.assert_array_equal(again.rollout(curricula[held], y[held, 0], lr=lr[held]), pred)


def test_the_kernel_needs_the_dot_variant_and_the_mean_reduction():
    for bad in ({"batch_reduce": "sum"}, {"variant": "concat", "batch_reduce": "mean"}):
        with pytest.raises(ValueError, match="kernel_dim > 0 must be used with"):
            FitConfig(kernel_dim=4, **bad)
    with pytest.raises(ValueError, match="kernel_dim"):
        method_config("gptfluence_kernel", {}, {})  # a kernel method needs its kernel's size
    with pytest.raises(ValueError, match="kernel_dim"):
        method_config("gptfluence", {}, {}, kernel_dim=4)
    with pytest.raises(ValueError, match="without MLPs needs the gradient kernel"):
        GPTfluenceDot(1, 4, 8, 8, rngs=nnx.Rngs(0), mlp=False)


def _tiny_kernel_config(stages="collect,simulate"):
    c = runpy.run_path(str(TINY))["get_config"]()
    c.stages = stages
    c.simulator.models = "gptfluence_kernel"
    c.simulator.kernel_projection_dim = 64
    g = c.simulator.gptfluence
    g.epochs, g.min_steps, g.warmup_steps, g.batch_size = 3, 0, 5, 32
    g.hidden = g.out_dim = 16
    c.baselines.methods = "persistence,mean_trajectory"
    return c


@pytest.mark.skipif(not paths.pythia_tokenizer().is_file(), reason="no Pythia tokenizer")
@pytest.mark.parametrize("kernel", ["path", "projected"])
def test_pipeline_fits_gptfluence_kernel(tmp_path, kernel):
    from gptjax.pipeline import Workdir, prepare, run_pipeline
    from gptjax.pipeline.config import validate
    from gptjax.pipeline.stages import run_split, simulation_features, with_kernel_features
    from simulator.training import restore_verified

    def configured(stages="collect,simulate"):
        c = _tiny_kernel_config(stages)
        if kernel == "projected":  # the first version: base-model gradients, projected
            c.simulator.kernel_checkpoints, c.simulator.kernel_precondition = 1, "none"
        return c

    config = configured()
    results = run_pipeline(config, tmp_path)
    row = results["simulate"]["loss"]["gptfluence_kernel"]
    assert np.isfinite(row["mse_mean"]) and row["n_nonfinite"] == 0
    assert ("projected" if kernel == "projected" else "mean path") in row["kernel"]
    wd = Workdir(tmp_path)
    prep = prepare(config, wd)
    fitted = restore_verified(wd.simulator_dir("loss", "gptfluence_kernel"))
    base = simulation_features(config, wd, prep)
    dyn = wd.runs.load(config.collect.num_runs, expect=prep.run_expect)
    train = run_split(config, dyn)["train"]
    joined = with_kernel_features(config, wd, prep, base, train, dyn.curricula.shape[1])
    dim = 64 if kernel == "projected" else config.data.test_size  # path: one per test example
    assert fitted.config.kernel_dim == dim
    assert joined["train"].shape[1] == base["train"].shape[1] + dim
    np.testing.assert_array_equal(fitted.train_features, joined["train"])
    # The pool side of the kernel features is centred on its mean.
    np.testing.assert_allclose(joined["train"][:, -dim:].mean(0), 0.0, atol=1e-5)
    again = run_pipeline(configured("simulate"), tmp_path)  # restored, not refitted
    assert again["simulate"]["loss"]["gptfluence_kernel"]["mse_mean"] == row["mse_mean"]
    if kernel == "projected":
        config.simulator.kernel_projection_dim = 0
        with pytest.raises(ValueError, match=re.escape("'simulator.kernel_projection_dim'")):
            validate(config)
    else:
        config.simulator.kernel_checkpoints = 0
        with pytest.raises(ValueError, match=re.escape("'simulator.kernel_checkpoints'")):
            validate(config)
        config.simulator.kernel_checkpoints, config.simulator.kernel_precondition = 8, "sgd"
        with pytest.raises(ValueError, match=re.escape("'simulator.kernel_precondition'")):
            validate(config)
