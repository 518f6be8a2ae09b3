"""GPTfluence on the base model's projected per-example gradients (``simulator.encoder =
"gradient"``, `gptjax.pipeline.gradient_features`): the features against a direct jax.grad
computation, the TRAK-style whitening's identity, the workdir cache, the simulate stage on the
tiny config, and the config check."""

from __future__ import annotations

import dataclasses
import re
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from baselines import GradientEngine
from baselines.grads import leaf_paths
from gptjax import paths
from gptjax.models.losses import per_example_loss
from gptjax.pipeline import Workdir, prepare, run_pipeline
from gptjax.pipeline import gradient_features as gf
from gptjax.pipeline.config import simulator_grad_config, validate
from gptjax.pipeline.stages import simulation_features
from gptjax.tasks.tokenize import TOKEN_FIELDS
from simulator.training import restore_verified

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"
DIM = 64  # a projection the tiny model's gradients (tens of thousands of numbers) fill

if not paths.pythia_tokenizer().is_file():
    pytest.skip("the Pythia tokenizer is not installed", allow_module_level=True)


def gradient_config(stages: str = "collect,simulate,report", whiten: float = 0.0):
    c = runpy.run_path(str(TINY))["get_config"]()
    c.stages = stages
    c.simulator.models = "gptfluence"
    c.simulator.encoder = "gradient"
    c.simulator.gradient_projection_dim = DIM
    c.simulator.gradient_whiten = whiten
    g = c.simulator.gptfluence
    g.epochs, g.min_steps, g.warmup_steps, g.batch_size = 3, 0, 5, 32
    g.hidden = g.out_dim = 16
    c.baselines.methods = "persistence,mean_trajectory"
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gradient_encoder")
    config = gradient_config()
    results = run_pipeline(config, workdir)
    prep = prepare(config, Workdir(workdir))
    return workdir, config, results, prep


def _direct_projected_gradients(prep, tokens: dict[str, np.ndarray]) -> np.ndarray:
    """[M, DIM] by hand: jax.grad of each example's own loss (`per_example_loss`, the
    fine-tuning objective) over every parameter leaf, projected leaf by leaf with the random
    matrices of the engine (which are keyed by the leaf's path, so the pipeline's factorised
    route uses the same ones) and summed over leaves."""
    graphdef, state = nnx.split(prep.model)
    explicit = dataclasses.replace(simulator_grad_config(gradient_config()), factorize="none")
    engine = GradientEngine(graphdef, state, explicit)

    def loss(s, ex):
        model = nnx.merge(graphdef, s)
        return per_example_loss(model, *(ex[k][None] for k in TOKEN_FIELDS))[0]

    grad = jax.jit(jax.grad(loss))
    out = np.zeros((len(tokens["input_ids"]), DIM), np.float64)
    for m in range(len(out)):
        ex = {k: jnp.asarray(tokens[k][m]) for k in TOKEN_FIELDS}
        _, leaves, _ = leaf_paths(grad(state, ex))
        for g, r in zip(leaves, engine.proj["explicit"], strict=True):
            g = np.asarray(g, np.float64)
            if len(r) == 1:  # 1-D leaf: a dense Gaussian [a, DIM]
                out[m] += g.reshape(-1) @ np.asarray(r[0], np.float64)
            else:  # blocks R1_j [a, k], R2_j [b, k]: (R1_jᵀ G R2_j)_j
                r1, r2 = (np.asarray(x, np.float64) for x in r)
                mat = g.reshape(r1.shape[0], -1)
                out[m] += np.einsum("ajk,ab,bjl->jkl", r1, mat, r2).reshape(-1)
    return out


def test_features_are_the_projected_per_example_gradients(finished):
    _, config, _, prep = finished
    feats = simulation_features(config, Workdir(finished[0]), prep)
    n_pool, n_test = len(prep.pools.pool), len(prep.pools.test)
    assert feats["train"].shape == (n_pool, DIM) and feats["test"].shape == (n_test, DIM)
    sides = (("train", prep.pool_tokens), ("test", prep.test_tokens))
    raw = {}
    for side, tokens in sides:
        raw[side] = _direct_projected_gradients(prep, tokens.loss_inputs())
        got = gf.projected_gradients(
            prep.model, tokens.loss_inputs(), simulator_grad_config(config)
        )
        # The pipeline's route (the embedding and unembedding factorised, the rest vmapped)
        # against the explicit gradient of each example alone.
        err = np.abs(got - raw[side]).max() / np.abs(raw[side]).max()
        assert err < 1e-3, f"{side}: relative error {err:.2e}"
    # Without whitening the features are the projected gradients over one scalar: the pool's
    # root mean square entry (so the MLPs see inputs of order 1).
    scale = np.sqrt(np.mean(raw["train"] ** 2))
    for side, _ in sides:
        np.testing.assert_allclose(feats[side], raw[side] / scale, rtol=2e-3, atol=2e-3)
    assert np.sqrt(np.mean(feats["train"].astype(np.float64) ** 2)) == pytest.approx(1.0, 1e-5)


@pytest.mark.parametrize("rows", [24, 96])  # fewer and more examples than dimensions
def test_whitening_identity(rows):
    """W = (GᵀG + λ̄I)^(-1/2) with λ̄ = λ·tr(GᵀG)/min(M, d): the whitened training features'
    second-moment matrix is (GᵀG)(GᵀG + λ̄I)⁻¹ and feature inner products are TRAK's scores
    g_i (GᵀG + λ̄I)⁻¹ g'."""
    rng = np.random.default_rng(rows)
    d, lam = 48, 0.5
    g = rng.standard_normal((rows, d)) * np.linspace(0.1, 3.0, d)  # anisotropic
    test = rng.standard_normal((5, d))
    w = gf.whitening(g, lam)
    gram = g.T @ g
    damp = lam * np.trace(gram) / min(rows, d)
    inv = np.linalg.inv(gram + damp * np.eye(d))
    np.testing.assert_allclose(w, w.T, atol=1e-12)
    np.testing.assert_allclose(w @ w, inv, rtol=1e-8, atol=1e-12)
    phi = g @ w
    np.testing.assert_allclose(phi.T @ phi, gram @ inv, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(phi @ (test @ w).T, g @ inv @ test.T, rtol=1e-7, atol=1e-9)
    # transform() then divides both sides by one scalar: the identities hold up to it.
    tr, te = gf.transform(g, test, lam)
    s2 = np.mean(phi**2)
    np.testing.assert_allclose(tr.T @ tr * s2, gram @ inv, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tr @ te.T * s2, g @ inv @ test.T, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="λ > 0"):
        gf.whitening(g, 0.0)


def test_whitened_pipeline_features_obey_the_identity(finished):
    workdir, config, _, prep = finished
    lam = 0.3
    config = gradient_config(whiten=lam)
    feats = simulation_features(config, Workdir(workdir), prep)
    g = gf.projected_gradients(
        prep.model, prep.pool_tokens.loss_inputs(), simulator_grad_config(config)
    ).astype(np.float64)
    gram = g.T @ g
    inv = np.linalg.inv(gram + lam * np.trace(gram) / min(g.shape) * np.eye(DIM))
    target = gram @ inv  # rank ≤ M = 28 < DIM: a damped projector onto the gradients' span
    tr = feats["train"].astype(np.float64)
    second = tr.T @ tr
    # One scalar apart (the features' RMS normalisation): tr(ΦᵀΦ) = M·d.
    np.testing.assert_allclose(second * np.trace(target) / np.trace(second), target, atol=2e-3)
    assert np.trace(second) == pytest.approx(tr.size, rel=1e-4)
    assert np.linalg.eigvalsh(target).max() < 1.0  # the damping shrinks every direction


def test_projected_gradients_are_cached_in_the_workdir(finished, monkeypatch):
    workdir, config, _, prep = finished
    wd = Workdir(workdir)
    first = simulation_features(config, wd, prep)
    files = sorted(Path(workdir).glob("features.*.npy"))
    assert len(files) == 2  # pool and test side (MiniLM was never run: encoder gradient)

    def refuse(*args, **kwargs):
        raise AssertionError("cached gradient features were computed again")

    # Not even a gradient engine is built (its projection matrices are the costly part).
    monkeypatch.setattr(gf, "GradientEngine", refuse)
    again = simulation_features(config, wd, prep)
    for side in ("train", "test"):
        np.testing.assert_array_equal(again[side], first[side])
    # Whitening is applied on top of the cache: another λ reuses it.
    simulation_features(gradient_config(whiten=2.0), wd, prep)
    assert sorted(Path(workdir).glob("features.*.npy")) == files
    monkeypatch.undo()
    # Another projection (or other parameters) is another cache entry.
    other = gradient_config()
    other.simulator.gradient_projection_dim = 16
    assert simulation_features(other, wd, prep)["train"].shape == (len(prep.pools.pool), 16)
    assert len(list(Path(workdir).glob("features.*.npy"))) == 4


def test_one_engine_serves_both_sides(finished, monkeypatch, tmp_path):
    """The pool and the test side share one GradientEngine (its projection matrices are
    drawn once), and the features equal each side projected alone."""
    _, config, _, prep = finished
    built = []
    real = gf.GradientEngine

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gf, "GradientEngine", counting)
    grad_config = simulator_grad_config(config)
    pool, test = prep.pool_tokens.loss_inputs(), prep.test_tokens.loss_inputs()
    raw = gf.gradient_features(tmp_path / "f", prep.model, pool, test, grad_config)
    assert len(built) == 1
    alone = {
        side: gf.projected_gradients(prep.model, tokens, grad_config)
        for side, tokens in (("train", pool), ("test", test))
    }
    expected = gf.transform(alone["train"], alone["test"])
    for side, want in zip(("train", "test"), expected, strict=True):
        np.testing.assert_array_equal(raw[side], want)


def test_simulate_stage_fits_on_the_gradient_features(finished):
    workdir, config, results, prep = finished
    row = results["simulate"]["loss"]["gptfluence"]
    assert np.isfinite(row["mse_mean"]) and row["n_nonfinite"] == 0
    fitted = restore_verified(Workdir(workdir).simulator_dir("loss", "gptfluence"))
    feats = simulation_features(config, Workdir(workdir), prep)
    np.testing.assert_array_equal(fitted.train_features, feats["train"])
    np.testing.assert_array_equal(fitted.test_features, feats["test"])
    dyn = Workdir(workdir).runs.load(6)
    pred = fitted.rollout(dyn.curricula[[4, 5]], dyn.metrics["loss"][[4, 5], 0])
    assert pred.shape == (2, dyn.curricula.shape[1] + 1, len(prep.pools.test))
    assert np.isfinite(pred).all()
    # A second run restores the fitted simulator (same features, same fit key).
    again = run_pipeline(gradient_config("simulate"), workdir)
    assert again["simulate"]["loss"]["gptfluence"]["mse_mean"] == row["mse_mean"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "gradient_projection_dim",
            0,
            "'simulator.gradient_projection_dim' must be an integer >= 1",
        ),
        ("gradient_whiten", -1.0, "'simulator.gradient_whiten' must be a finite λ >= 0"),
        # caught first by validate's check that every float key is finite
        ("gradient_whiten", float("inf"), "config key 'simulator.gradient_whiten' must be finite"),
    ],
)
def test_config_refuses_bad_gradient_settings(key, value, message):
    config = gradient_config()
    validate(config)
    config.simulator.pooling = "last"  # ignored by the gradient encoder
    validate(config)
    config.simulator[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        validate(config)


def test_config_refuses_a_projection_the_blocks_do_not_divide():
    config = gradient_config()
    config.baselines.projection_block = 3
    with pytest.raises(
        ValueError,
        match=re.escape(
            "config key 'simulator.gradient_projection_dim' (64) must be a multiple of "
            "baselines.projection_block² (9)"
        ),
    ):
        validate(config)
