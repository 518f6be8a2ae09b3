"""Gradient baselines on a tiny synthetic setup: a tiny GPT-NeoX fine-tuned with optax SGD for
a few steps per run (parameters saved at every step), then TracIn-CP and Grad-Dot predicted
for the held-out runs and scored by the evaluation harness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from baselines import GRADIENT_METHODS, GradConfig, predict_gradient_methods
from gptjax.evaluation import evaluate, persistence
from gptjax.models.config import pythia_style
from gptjax.models.losses import batch_loss, per_example_loss
from gptjax.models.transformer import init_model
from tests.reference.explicit_grads import explicit_gradients, flat_dot

VOCAB, LENGTH, TARGETS = 32, 8, 2
POOL, N_TEST, SUBSET, BATCH, EPOCHS = 10, 4, 6, 2, 2
K = 7  # runs 0-2 train, 3 val, 4-5 test, 6 diverged (invalid)


def token_batch(rng, m):
    ids = rng.integers(1, VOCAB, (m, LENGTH)).astype(np.int32)
    lens = rng.integers(TARGETS + 3, LENGTH + 1, m)
    mask = (np.arange(LENGTH)[None] < lens[:, None]).astype(np.int32)
    pos = np.stack([np.arange(n - TARGETS - 1, n - 1) for n in lens]).astype(np.int32)
    return dict(
        input_ids=ids,
        attention_mask=mask,
        target_pos=pos,
        target_ids=np.take_along_axis(ids, pos + 1, 1),
        target_mask=np.ones((m, TARGETS), np.float32),
    )


@pytest.fixture(scope="module")
def collected():
    """K runs of SGD fine-tuning with a linearly decaying learning rate: curricula, y, lr and
    every step's parameters."""
    rng = np.random.default_rng(0)
    cfg = pythia_style(vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2)
    model = init_model(cfg, 0)
    # Token embeddings of a trained model's scale (std 0.02 leaves the first LayerNorm in its
    # strongly curved regime, where no first-order method can follow the first steps).
    model.embed.embedding[...] = model.embed.embedding[...] * 25.0
    graphdef, base = nnx.split(model)
    pool, test = token_batch(rng, POOL), token_batch(rng, N_TEST)
    steps = EPOCHS * SUBSET // BATCH
    schedule = optax.linear_schedule(0.1, 0.02, steps)
    opt = optax.sgd(schedule)

    @jax.jit
    def step(state, opt_state, batch):
        grads = jax.grad(lambda s: batch_loss(nnx.merge(graphdef, s), batch))(state)
        updates, opt_state = opt.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state

    @jax.jit
    def test_loss(state):
        return per_example_loss(nnx.merge(graphdef, state), *(test[k] for k in test))

    curricula = np.zeros((K, steps, BATCH), np.int32)
    y = np.zeros((K, steps + 1, N_TEST), np.float32)
    params = {}
    for run in range(K):
        subset = rng.choice(POOL, SUBSET, replace=False)
        order = np.concatenate([rng.permutation(subset) for _ in range(EPOCHS)])
        curricula[run] = order.reshape(steps, BATCH)
        state, opt_state = base, opt.init(base)
        params[run, 0] = state
        y[run, 0] = test_loss(state)
        for t in range(1, steps + 1):
            batch = {k: v[curricula[run, t - 1]] for k, v in pool.items()}
            state, opt_state = step(state, opt_state, batch)
            params[run, t] = state
            y[run, t] = test_loss(state)
    lr = np.tile(np.array([schedule(t) for t in range(steps)], np.float32), (K, 1))
    valid = np.ones(K, bool)
    valid[6] = False
    dyn = dict(
        curricula=curricula,
        metrics={"loss": y, "rougeL": rng.uniform(size=y.shape).astype(np.float32)},
        lr=lr,
        valid=valid,
    )
    return dict(dyn=dyn, graphdef=graphdef, params=params, pool=pool, test=test, steps=steps)


def test_predict_gradient_methods(collected):
    c = collected
    test_runs = [4, 5]
    y = c["dyn"]["metrics"]["loss"]
    true = y[test_runs]
    predicted = predict_gradient_methods(
        list(GRADIENT_METHODS),
        test_runs,
        curricula=c["dyn"]["curricula"],
        lr=c["dyn"]["lr"],
        y=y,
        graphdef=c["graphdef"],
        params_at=lambda run, s: c["params"][run, s],
        saved_steps=lambda run: list(range(c["steps"] + 1)),
        train_tokens=c["pool"],
        test_tokens=c["test"],
        grad_config=GradConfig(),
        num_checkpoints=2,
    )
    assert list(predicted) == list(GRADIENT_METHODS)
    rows = {m: evaluate(pred, true) for m, (pred, _) in predicted.items()}
    for method, (pred, seconds) in predicted.items():
        assert pred.shape == true.shape and seconds >= 0
        np.testing.assert_array_equal(pred[:, 0], true[:, 0])  # starts from the true y_0
        assert rows[method]["n_nonfinite"] == 0 and np.isfinite(rows[method]["mse_mean"])

    # With plain SGD, one step changes the loss by -η ⟨∇ℓ(z'), mean_i ∇ℓ(z_i)⟩ + O(η²): the
    # all-steps TracIn trajectory is a first-order Taylor expansion of the truth and must be
    # far closer to it than persistence, and closer than the coarser checkpoint schedules.
    mse = {m: row["mse_mean"] for m, row in rows.items()}
    mse["persistence"] = evaluate(persistence(true), true)["mse_mean"]
    print({m: round(v, 6) for m, v in mse.items()})
    assert mse["tracin_cp_all"] < 0.05 * mse["persistence"]
    assert mse["tracin_cp_all"] < mse["tracin_cp_k"]
    assert mse["tracin_cp_all"] < mse["grad_dot"]


def test_unknown_gradient_method_is_refused(collected):
    with pytest.raises(ValueError, match="unknown gradient methods"):
        predict_gradient_methods(
            ["tracin_cp_every"],
            [4],
            curricula=None,
            lr=None,
            y=None,
            graphdef=None,
            params_at=None,
            saved_steps=None,
            train_tokens=None,
            test_tokens=None,
            grad_config=GradConfig(),
        )


def test_first_step_is_tracin_formula(collected):
    """ŷ_1 = y_0 − η_1 · mean_{i∈c_1} ⟨∇ℓ(z_i; θ_0), ∇ℓ(z′; θ_0)⟩, from plain vmap(grad)."""
    from baselines.grads import GradientEngine, take
    from baselines.tracin import simulate_runs

    c, run = collected, 4
    dyn = c["dyn"]
    engine = GradientEngine(c["graphdef"], c["params"][run, 0])
    pred = simulate_runs(
        engine,
        [run],
        params_at=lambda r, s: c["params"][r, s],
        saved_steps=lambda r: list(range(c["steps"] + 1)),
        curricula=dyn["curricula"],
        lr=dyn["lr"],
        y=dyn["metrics"]["loss"],
        train_tokens=c["pool"],
        test_tokens=c["test"],
        mode="all",
    )[0]
    theta0 = c["params"][run, 0]
    g_train = explicit_gradients(c["graphdef"], theta0, take(c["pool"], dyn["curricula"][run, 0]))
    g_test = explicit_gradients(c["graphdef"], theta0, c["test"])
    expected = dyn["metrics"]["loss"][run, 0] - dyn["lr"][run, 0] * flat_dot(g_train, g_test).mean(
        0
    )
    np.testing.assert_allclose(pred[1], expected, rtol=1e-5, atol=1e-6)
    assert not jnp.allclose(pred[1], pred[0])
