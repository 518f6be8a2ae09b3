"""The table rollout against plain loops; the models' table and per-transition paths agree."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from simulator import rollout as rl
from simulator.gptfluence import GPTfluenceConcat, GPTfluenceDot, StackedMLP
from simulator.simfluence import SimfluenceLinear
from tests.reference.naive_simulator import naive_rollout


def _loop_rollout(table, curricula, y_given, order, batch_reduce, pad):
    """Textbook recurrence, one scalar at a time."""
    r_runs, steps, _ = curricula.shape
    m = y_given.shape[1]
    n_test = table.shape[2]
    out = np.zeros((r_runs, steps + 1, n_test))
    for r in range(r_runs):
        for n in range(n_test):
            ys = list(y_given[r, :, n])
            for t in range(m, steps + 1):
                ids = [i for i in curricula[r, t - 1] if i >= 0]
                c = table[:, ids, n].sum(1)
                if batch_reduce == "mean":
                    c = c / max(len(ids), 1)
                y = c[order]
                for j in range(1, order + 1):
                    prev = t - j
                    y += c[j - 1] * (ys[prev] if prev >= 0 else (ys[0] if pad == "first" else 0))
                ys.append(y)
            out[r, :, n] = ys
    return out


@pytest.mark.parametrize(
    "order,batch_reduce,pad,m",
    [
        (1, "sum", "first", 1),
        (3, "sum", "first", 1),
        (2, "mean", "zero", 1),
        (3, "mean", "first", 2),
        (2, "sum", "zero", 3),
    ],
)
def test_rollout_matches_loop(order, batch_reduce, pad, m):
    rng = np.random.default_rng(order)
    p, n, r, t, b = 9, 4, 3, 7, 3
    table = rng.normal(scale=0.3, size=(order + 1, p, n)).astype(np.float32)
    curricula = rng.integers(0, p, size=(r, t, b)).astype(np.int32)
    curricula[0, 2, 1] = -1  # empty slot
    curricula[1, 4, :] = -1  # empty step
    y_given = rng.normal(size=(r, m, n)).astype(np.float32)
    got = rl.rollout_table(
        jnp.asarray(table),
        jnp.asarray(curricula),
        jnp.asarray(y_given),
        order=order,
        batch_reduce=batch_reduce,
        pad=pad,
    )
    want = _loop_rollout(table.astype(np.float64), curricula, y_given, order, batch_reduce, pad)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_compact_ids_and_as_given():
    used, comp = rl.compact_ids(np.array([[[5, 2], [-1, 9]]]))
    np.testing.assert_array_equal(used, [2, 5, 9])
    np.testing.assert_array_equal(comp, [[[1, 0], [-1, 2]]])
    assert rl.as_given(np.zeros((2, 3))).shape == (2, 1, 3)
    with pytest.raises(ValueError):
        rl.as_given(np.zeros(3))


def _feats(p=7, n=5, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return (
        jnp.asarray(rng.normal(size=(p, d)), jnp.float32),
        jnp.asarray(rng.normal(size=(n, d)), jnp.float32),
    )


@pytest.mark.parametrize("batch_reduce", ["sum", "mean"])
def test_transition_coefs_agree_with_table(batch_reduce):
    tr, te = _feats()
    ids = jnp.array([[[0, 3, -1], [6, 6, 1]], [[2, -1, -1], [5, 4, 0]]])  # [M=2, K=2, B=3]
    test_ids = jnp.array([4, 1])
    models = [
        GPTfluenceDot(2, 6, 8, 5, rngs=nnx.Rngs(0)),
        GPTfluenceConcat(2, 6, 8, 4, rngs=nnx.Rngs(1)),
    ]
    for model in models:
        # jit: one compilation instead of many eagerly dispatched ops
        table = np.asarray(jax.jit(model.table)(tr, te))
        assert table.shape == (3, 7, 5)
        modes = ["pool", "gather"] if isinstance(model, GPTfluenceDot) else ["gather"]
        for mode in modes:
            coefs = jax.jit(partial(model.transition_coefs, batch_reduce=batch_reduce, mode=mode))
            got = np.asarray(coefs(tr, te, ids, test_ids))
            for mi in range(2):
                for k in range(2):
                    sel = [i for i in np.asarray(ids[mi, k]) if i >= 0]
                    want = table[:, sel, int(test_ids[mi])].sum(1)
                    if batch_reduce == "mean":
                        want = want / len(sel)
                    np.testing.assert_allclose(got[mi, k], want, rtol=1e-5, atol=1e-6)
    sim = SimfluenceLinear(7, 5, batch_size=3, batch_reduce=batch_reduce)
    sim.b.value = jnp.arange(35.0).reshape(7, 5)
    got = np.asarray(sim.transition_coefs(ids, test_ids, batch_reduce))
    table = np.asarray(sim.table_by_ids(jnp.arange(7), jnp.arange(5)))
    want = table[:, [0, 3], 4].sum(1)
    np.testing.assert_allclose(got[0, 0], want / (2 if batch_reduce == "mean" else 1))


def test_torch_style_init_bounds():
    mlp = StackedMLP(2, 50, 40, 30, init="torch", rngs=nnx.Rngs(0))
    w1, b2 = np.asarray(mlp.w1[...]), np.asarray(mlp.b2[...])
    assert np.abs(w1).max() <= 1 / np.sqrt(50) and np.abs(w1).max() > 0.9 / np.sqrt(50)
    assert np.abs(b2).max() <= 1 / np.sqrt(40) and np.abs(b2).std() > 0
    flax_mlp = StackedMLP(2, 50, 40, 30, init="flax", rngs=nnx.Rngs(0))
    assert np.all(np.asarray(flax_mlp.b1[...]) == 0)


@pytest.mark.parametrize("cls,reduce", [(GPTfluenceDot, "sum"), (GPTfluenceConcat, "mean")])
def test_table_rollout_equals_naive_per_transition(cls, reduce):
    tr, te = _feats(p=12, n=5)
    model = cls(1, 6, 8, 4, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    curricula = rng.integers(0, 12, size=(2, 6, 4)).astype(np.int32)
    y0 = rng.uniform(1, 2, size=(2, 5)).astype(np.float32)
    # Scale the table down so the recurrence stays bounded and the comparison meaningful.
    table = model.table(tr, te) * 0.1
    fast = rl.rollout_table(
        table, jnp.asarray(curricula), jnp.asarray(y0[:, None]), order=1, batch_reduce=reduce
    )
    graphdef, params = nnx.split(model, nnx.Param)
    if cls is GPTfluenceDot:  # scale the output layer: ⟨0.316·F, 0.316·F⟩ = 0.1⟨F, F⟩
        params["mlp"]["w2"].value = params["mlp"]["w2"][...] * np.sqrt(0.1)
        params["mlp"]["b2"].value = params["mlp"]["b2"][...] * np.sqrt(0.1)
    else:
        params["wh"].value = params["wh"][...] * 0.1
        params["bh"].value = params["bh"][...] * 0.1
    slow = naive_rollout(nnx.merge(graphdef, params), tr, te, curricula, y0, batch_reduce=reduce)
    np.testing.assert_allclose(np.asarray(fast), slow, rtol=1e-4, atol=1e-5)
