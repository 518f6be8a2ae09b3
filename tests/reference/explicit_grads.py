"""Per-example gradients by plain ``vmap(grad)``: the reference the gradient engine of
``baselines.grads`` is checked against (tests only)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from baselines.grads import as_batch
from gptjax.models.losses import masked_token_mean, per_example_loss
from gptjax.tasks.tokenize import TOKEN_FIELDS


def explicit_gradients(graphdef: Any, state: Any, batch: Any, last_layer: bool = False) -> Any:
    """Per-example gradients [M, ...] of every parameter leaf by plain ``vmap(grad)`` of
    ``gptjax.models.losses.per_example_loss``, for checking the engine. With ``last_layer``
    only the unembedding (the head kernel, or the tied table as used by the head)."""
    batch = {k: jnp.asarray(v) for k, v in as_batch(batch).items()}

    def loss(params, ex):
        model = nnx.merge(graphdef, params)
        return per_example_loss(model, *(ex[k][None] for k in TOKEN_FIELDS))[0]

    if not last_layer:
        return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(state, batch)

    model = nnx.merge(graphdef, state)
    tied = model.config.tie_embeddings

    def head_loss(w, ex):
        m = nnx.merge(graphdef, state)
        hidden, _ = m(ex["input_ids"][None], attention_mask=ex["attention_mask"][None])
        h = jax.lax.stop_gradient(hidden[0][ex["target_pos"]])
        logits = h @ (w.T if tied else w)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, ex["target_ids"])
        return masked_token_mean(ce, ex["target_mask"])

    w = model.embed.embedding[...] if tied else model.lm_head.kernel[...]
    return jax.jit(jax.vmap(jax.grad(head_loss), in_axes=(None, 0)))(w, batch)


def flat_dot(g1: Any, g2: Any) -> np.ndarray:
    """[M1, M2] inner products of two pytrees of per-example gradients (leading axis)."""
    l1, l2 = jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)
    out = 0.0
    for a, b in zip(l1, l2, strict=True):
        out = (
            out
            + np.asarray(a, np.float64).reshape(a.shape[0], -1)
            @ np.asarray(b, np.float64).reshape(b.shape[0], -1).T
        )
    return np.asarray(out)
