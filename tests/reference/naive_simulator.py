"""A straightforward per-transition GPTfluence rollout, as the reference implementation does it.

For every step it evaluates the MLPs again for every (test example, batch example) pair and
for every test example — no per-pool precomputation. Each step is jitted and batched over
the test examples (already kinder than a Python loop per example); steps and runs are a
Python loop. Used as an independent check of the table rollout and as the benchmark's
baseline; not meant for real use.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from simulator.gptfluence import GPTfluenceConcat, GPTfluenceDot


@partial(jax.jit, static_argnames=("graphdef", "order", "batch_reduce"))
def _step(graphdef, params, batch_feats, batch_mask, test_feats, hist, *, order, batch_reduce):
    model = nnx.merge(graphdef, params)
    n, b = test_feats.shape[0], batch_feats.shape[0]
    rows = jnp.broadcast_to(batch_feats[None], (n, b, batch_feats.shape[1]))  # per transition
    if isinstance(model, GPTfluenceDot):
        fp = model.mlp(rows)  # [N, B, J, h]: recomputed for every (transition, batch example)
        ft = model.mlp(test_feats)  # [N, J, h]
        per_pair = jnp.einsum("nbjh,njh->nbj", fp, ft)
    elif isinstance(model, GPTfluenceConcat):
        x = jnp.concatenate([rows, jnp.broadcast_to(test_feats[:, None], rows.shape)], -1)
        h = jax.nn.relu(x @ model.w1[...] + model.b1[...])
        h = jax.nn.relu(h @ model.w2[...] + model.b2[...])
        per_pair = h @ model.wh[...] + model.bh[...]  # [N, B, J]
    else:
        raise TypeError(f"not a GPTfluence model: {type(model).__name__}")
    mask = batch_mask[None, :, None]
    c = jnp.sum(per_pair * mask, axis=1)
    if batch_reduce == "mean":
        c = c / jnp.maximum(batch_mask.sum(), 1.0)
    y = jnp.sum(c[:, :order] * hist, axis=1) + c[:, order]
    return y, jnp.concatenate([y[:, None], hist[:, :-1]], axis=1)


def naive_rollout(
    model: nnx.Module,
    train_features: np.ndarray,
    test_features: np.ndarray,
    curricula: np.ndarray,
    y0: np.ndarray,
    *,
    batch_reduce: str = "sum",
) -> np.ndarray:
    """[R, T+1, N] from y_0 [R, N] (history before step 0 padded with y_0)."""
    graphdef, params = nnx.split(model, nnx.Param)
    order = model.order
    train_features = jnp.asarray(train_features, jnp.float32)
    test_features = jnp.asarray(test_features, jnp.float32)
    r_runs, steps, _ = curricula.shape
    out = np.zeros((r_runs, steps + 1, test_features.shape[0]), np.float32)
    for r in range(r_runs):
        out[r, 0] = y0[r]
        hist = jnp.repeat(jnp.asarray(y0[r], jnp.float32)[:, None], order, axis=1)
        for t in range(steps):
            ids = curricula[r, t]
            feats = train_features[np.maximum(ids, 0)]
            mask = jnp.asarray(ids >= 0, jnp.float32)
            y, hist = _step(
                graphdef,
                params,
                feats,
                mask,
                test_features,
                hist,
                order=order,
                batch_reduce=batch_reduce,
            )
            out[r, t + 1] = np.asarray(y)
    return out
