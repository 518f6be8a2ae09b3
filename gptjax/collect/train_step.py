"""Pure, jittable fine-tuning and evaluation steps of one run; `collect` vmaps and shards them.

State is an nnx.State of parameters plus an optax state; the model is rebuilt from a fixed
graphdef inside the step (nnx.merge), so the step is a function of arrays only and can be
vmapped over stacked runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gptjax.models.losses import per_example_loss
from gptjax.tasks.tokenize import TOKEN_FIELDS


def make_schedule(
    learning_rate: float, total_steps: int, warmup_steps: int = 0, end_factor: float = 0.0
) -> optax.Schedule:
    """Linear warm-up from 0 (optional) then linear decay to end_factor * lr at step T."""
    decay = optax.linear_schedule(
        learning_rate, learning_rate * end_factor, max(total_steps - warmup_steps, 1)
    )
    if warmup_steps <= 0:
        return decay
    warm = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warm, decay], [warmup_steps])


def make_optimizer(
    schedule: optax.Schedule, *, b1: float, b2: float, eps: float, weight_decay: float
) -> optax.GradientTransformation:
    return optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def example_losses(graphdef: nnx.GraphDef, params: Any, tokens: dict[str, jax.Array]) -> jax.Array:
    model = nnx.merge(graphdef, params)
    return per_example_loss(model, *(tokens[k] for k in TOKEN_FIELDS))


def eval_losses(
    graphdef: nnx.GraphDef, params: Any, test_tokens: dict[str, jax.Array], chunk: int
) -> jax.Array:
    """Per-example target loss of every test example, [N], evaluated `chunk` at a time."""
    n = test_tokens["input_ids"].shape[0]
    if n <= chunk:
        return example_losses(graphdef, params, test_tokens)
    pad = -n % chunk
    padded = jax.tree.map(lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), test_tokens)
    blocks = jax.tree.map(lambda a: a.reshape(-1, chunk, *a.shape[1:]), padded)
    losses = jax.lax.map(lambda blk: example_losses(graphdef, params, blk), blocks)
    return losses.reshape(-1)[:n]


def make_update(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation) -> Callable:
    """update(params, opt_state, batch) -> (params, opt_state, loss, finite): one optimiser
    step on the mean target loss of ``batch``; ``finite`` says the loss and the gradient
    norm were finite. The one training step of collection and of base-model pretraining."""

    def update(params, opt_state, batch):
        loss, grads = jax.value_and_grad(lambda p: example_losses(graphdef, p, batch).mean())(
            params
        )
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, finite

    return update


def make_run_step(
    graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, eval_chunk: int
) -> Callable:
    """step(params, opt_state, alive, batch_ids, pool_tokens, test_tokens) for ONE run.

    Returns (params, opt_state, alive, train_loss, test_losses [N]). A run whose training
    loss, gradient norm or evaluation becomes non-finite is marked dead from that step on,
    and its values read NaN. Runs in a vmapped group are independent, so a dead run cannot
    affect the others and its parameters need not be frozen (freezing would cost two extra
    passes over every parameter and optimiser state per step).
    """

    update = make_update(graphdef, optimizer)

    def step(params, opt_state, alive, batch_ids, pool_tokens, test_tokens):
        batch = jax.tree.map(lambda a: a[batch_ids], pool_tokens)
        params, opt_state, loss, finite = update(params, opt_state, batch)
        test_losses = eval_losses(graphdef, params, test_tokens, eval_chunk)
        alive = alive & finite & jnp.all(jnp.isfinite(test_losses))
        return params, opt_state, alive, loss, jnp.where(alive, test_losses, jnp.nan)

    return step
